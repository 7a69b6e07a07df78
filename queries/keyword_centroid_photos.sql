-- keyword_centroid_photos: photos like the ones people downloaded after searching for a keyword.
--
-- The centroid of the image vectors of photos downloaded for the keyword, each weighted by
-- its number of such downloads, is "what people searching for X want"; the k photos nearest to
-- it are returned, with how often each was itself downloaded for the keyword (0 for photos
-- the search never led to: candidates to surface for that keyword).
--
-- Parameters:
--   keyword String  the search keyword (as in conversions.keyword, case-insensitive)
--   k UInt32 = 10  how many photos
--   model String  embedding model; clipsql fills in the model its searches use
-- Columns: photo_id, distance, keyword_downloads
WITH
    downloaded AS
    (
        SELECT photo_id, count() AS downloads
        FROM conversions
        WHERE conversion_type = 'download' AND lower(keyword) = lower({keyword:String})
        GROUP BY photo_id
    ),
    (
        SELECT sumForEach(arrayMap(x -> x * d.downloads, e.embedding))
        FROM photo_embeddings AS e
        INNER JOIN downloaded AS d ON d.photo_id = e.photo_id
        WHERE e.model = {model:String}
    ) AS centroid
SELECT e.photo_id AS photo_id, cosineDistance(e.embedding, centroid) AS distance,
       toUInt64(ifNull(d.downloads, 0)) AS keyword_downloads
FROM photo_embeddings AS e
LEFT JOIN downloaded AS d ON d.photo_id = e.photo_id
WHERE e.model = {model:String} AND length(centroid) > 0
ORDER BY distance, photo_id
LIMIT {k:UInt32};
