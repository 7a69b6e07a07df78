-- photo_details: what a search result shows about each photo, looked up by primary key.
--
-- Parameters:
--   ids Array(String)  the photo ids
-- Columns: photo_id, photo_image_url, photo_description, photographer_username
SELECT photo_id, photo_image_url, photo_description, photographer_username
FROM photos
WHERE photo_id IN {ids:Array(String)}
