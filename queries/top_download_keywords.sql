-- top_download_keywords: the search keywords that led to a photo's downloads, most frequent first.
--
-- The tutorial's second analytics step for one photo (the web app asks it for the most
-- downloaded photo of a result list): each keyword with the number of downloads it led to,
-- ties by keyword. Downloads without a keyword are not counted.
--
-- Parameters:
--   photo_id String  the photo
--   n UInt32 = 5  how many keywords
-- Columns: keyword, downloads
--
-- Example: clickhouse-client --param_photo_id=XMyPniM9LF0 --param_n=5 --queries-file queries/top_download_keywords.sql
SELECT keyword, count() AS downloads
FROM conversions
WHERE conversion_type = 'download' AND keyword != '' AND photo_id = {photo_id:String}
GROUP BY keyword
ORDER BY downloads DESC, keyword
LIMIT {n:UInt32};
