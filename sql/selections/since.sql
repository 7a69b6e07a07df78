-- since: photos submitted on or after a date.
--
-- Parameters:
--   value Date  the first day (YYYY-MM-DD)
photo_id IN (SELECT photo_id FROM photos WHERE photo_submitted_at >= {value:Date})
