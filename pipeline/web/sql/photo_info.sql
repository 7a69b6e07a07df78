-- photo_info: what the web app shows about one photo when it is opened large.
--
-- Its metadata, its keywords (alphabetical), the titles of the collections it is in, and
-- how often it was downloaded according to the conversions table.
--
-- Parameters:
--   photo_id String  the photo
-- Columns: photo_id, photo_url, photo_image_url, photo_description, ai_description, photographer_username, photographer_first_name, photographer_last_name, photo_location_name, photo_location_country, photo_location_city, photo_width, photo_height, photo_submitted_at, keywords, collections, downloads
SELECT
    photo_id, photo_url, photo_image_url, photo_description, ai_description,
    toString(photographer_username) AS photographer_username, photographer_first_name, photographer_last_name,
    photo_location_name, toString(photo_location_country) AS photo_location_country,
    toString(photo_location_city) AS photo_location_city, photo_width, photo_height,
    formatDateTime(photo_submitted_at, '%Y-%m-%d %H:%i') AS photo_submitted_at,
    (SELECT arraySort(groupUniqArray(keyword)) FROM keywords WHERE photo_id = {photo_id:String}) AS keywords,
    (SELECT arraySort(groupUniqArray(collection_title)) FROM collections WHERE photo_id = {photo_id:String})
        AS collections,
    (SELECT count() FROM conversions WHERE conversion_type = 'download' AND photo_id = {photo_id:String})
        AS downloads
FROM photos
WHERE photo_id = {photo_id:String}
LIMIT 1;
