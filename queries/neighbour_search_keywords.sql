-- neighbour_search_keywords: the search keywords that led people to download photos like this one.
--
-- Takes the photo's k nearest neighbours (cosine distance, the photo itself excluded) and
-- counts the keywords of their downloads (conversions with a keyword), with how many of the
-- neighbours each keyword led to. A demand signal: what people searched for when they wanted
-- this kind of picture.
--
-- Parameters:
--   photo_id String  the target photo
--   k UInt32 = 10  how many neighbours
--   n UInt32 = 10  how many keywords
--   model String  embedding model; clipsql fills in the model its searches use
-- Columns: keyword, downloads, photos
WITH
    (
        SELECT any(embedding) FROM photo_embeddings
        WHERE model = {model:String} AND photo_id = {photo_id:String}
    ) AS target,
    neighbours AS
    (
        SELECT photo_id
        FROM photo_embeddings
        WHERE model = {model:String} AND photo_id != {photo_id:String}
        ORDER BY cosineDistance(embedding, target), photo_id
        LIMIT {k:UInt32}
    )
SELECT keyword, count() AS downloads, uniqExact(photo_id) AS photos
FROM conversions
WHERE conversion_type = 'download' AND keyword != '' AND photo_id IN (SELECT photo_id FROM neighbours)
GROUP BY keyword
ORDER BY downloads DESC, keyword
LIMIT {n:UInt32};
