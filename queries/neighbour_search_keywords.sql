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
--   table Identifier  the model's embeddings table, embeddings_<model>; clipsql fills it in (--param model=M)
-- Columns: keyword, downloads, photos
WITH
    (
        SELECT embedding FROM {table:Identifier} WHERE photo_id = {photo_id:String} LIMIT 1
    ) AS target,
    neighbours AS
    (
        SELECT photo_id, cosineDistance(embedding, target) AS distance
        FROM
        (
            SELECT photo_id, embedding FROM {table:Identifier}
            ORDER BY cosineDistance(embedding, target)
            LIMIT {k:UInt32} + 1
        )
        WHERE photo_id != {photo_id:String}
        ORDER BY distance, photo_id
        LIMIT {k:UInt32}
    )
SELECT keyword, count() AS downloads, uniqExact(photo_id) AS photos
FROM conversions
WHERE conversion_type = 'download' AND keyword != '' AND photo_id IN (SELECT photo_id FROM neighbours)
GROUP BY keyword
ORDER BY downloads DESC, keyword
LIMIT {n:UInt32};
