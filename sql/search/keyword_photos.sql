-- keyword_photos: for some keywords, how many photos carry each, and whether one photo does.
--
-- Parameters:
--   keywords Array(String)  the keywords
--   photo_id String  a photo to check ('' for none)
-- Columns: keyword, photos, tagged
SELECT keyword, uniqExact(photo_id) AS photos, toBool(countIf(photo_id = {photo_id:String}) > 0) AS tagged
FROM keywords
WHERE keyword IN {keywords:Array(String)}
GROUP BY keyword
