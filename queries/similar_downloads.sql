-- similar_downloads: downloads of each of a photo's k nearest neighbours (0 included), nearest first.
--
-- The tutorial's first analytics step: take the k photos whose image vectors are closest to
-- the target photo's (cosine distance, the target itself excluded) and count how often each
-- was downloaded according to the conversions table. The neighbours come from the model's
-- HNSW index (ORDER BY the distance to a constant vector, LIMIT k + 1) and are re-scored with
-- the stored vectors; without an index the same statement is an exact scan.
--
-- Parameters:
--   photo_id String  the target photo
--   k UInt32 = 10  how many neighbours
--   table Identifier  the model's embeddings table, embeddings_<model>; clipsql fills it in (--param model=M)
-- Columns: photo_id, downloads
--
-- Example: clickhouse-client --param_photo_id=XMyPniM9LF0 --param_k=10 \
--            --param_table=embeddings_openai_clip_vit_base_patch32 --queries-file queries/similar_downloads.sql
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
SELECT n.photo_id AS photo_id, toUInt64(d.downloads) AS downloads
FROM neighbours AS n
LEFT JOIN
(
    SELECT photo_id, count() AS downloads
    FROM conversions
    WHERE conversion_type = 'download' AND photo_id IN (SELECT photo_id FROM neighbours)
    GROUP BY photo_id
) AS d ON d.photo_id = n.photo_id
ORDER BY n.distance, n.photo_id;
