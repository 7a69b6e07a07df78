-- ids: an explicit list of photo ids.
--
-- Parameters:
--   value Array(String)  the photo ids
photo_id IN {value:Array(String)}
