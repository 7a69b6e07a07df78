-- until: photos submitted before the end of a date.
--
-- Parameters:
--   value Date  the last day (YYYY-MM-DD)
photo_id IN (SELECT photo_id FROM photos WHERE photo_submitted_at < {value:Date} + 1)
