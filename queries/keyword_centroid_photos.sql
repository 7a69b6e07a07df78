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
--   table Identifier  the model's embeddings table, embeddings_<model>; clipsql fills it in (--param model=M)
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
        FROM {table:Identifier} AS e
        INNER JOIN downloaded AS d ON d.photo_id = e.photo_id
    ) AS centroid,
    nearest AS
    (
        SELECT photo_id, cosineDistance(embedding, centroid) AS distance
        FROM
        (
            SELECT photo_id, embedding FROM {table:Identifier}
            ORDER BY cosineDistance(embedding, centroid)
            LIMIT {k:UInt32}
        )
        WHERE length(centroid) > 0
    )
SELECT n.photo_id AS photo_id, n.distance AS distance, toUInt64(ifNull(d.downloads, 0)) AS keyword_downloads
FROM nearest AS n
LEFT JOIN downloaded AS d ON d.photo_id = n.photo_id
ORDER BY distance, photo_id;
