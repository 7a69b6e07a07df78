-- image_url: where a photo's image lives (http(s) URL, file:// URL or local path).
--
-- Parameters:
--   photo_id String  the photo
-- Columns: photo_image_url
SELECT photo_image_url FROM photos WHERE photo_id = {photo_id:String} LIMIT 1;
