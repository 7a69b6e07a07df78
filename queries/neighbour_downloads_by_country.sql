-- neighbour_downloads_by_country: where the photos most like a given photo are downloaded.
--
-- Takes the photo's k nearest neighbours (cosine distance of image vectors, the photo itself
-- excluded) and counts their downloads per country of the downloading user. Countries with no
-- download of any neighbour are not listed.
--
-- Parameters:
--   photo_id String  the target photo
--   k UInt32 = 10  how many neighbours
--   table Identifier  the model's embeddings table, embeddings_<model>; clipsql fills it in (--param model=M)
-- Columns: country, downloads, photos
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
SELECT conversion_country AS country, count() AS downloads, uniqExact(photo_id) AS photos
FROM conversions
WHERE conversion_type = 'download' AND photo_id IN (SELECT photo_id FROM neighbours)
GROUP BY country
ORDER BY downloads DESC, country;
