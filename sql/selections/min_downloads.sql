-- min_downloads: photos downloaded at least N times according to the conversions table.
--
-- Parameters:
--   value UInt64  the least number of downloads
photo_id IN (SELECT photo_id FROM conversions WHERE conversion_type = 'download' GROUP BY photo_id HAVING count() >= {value:UInt64})
