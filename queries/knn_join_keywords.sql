-- knn_join_keywords: each photo tagged keyword A with its k nearest photos tagged keyword B.
--
-- A similarity join in one SQL statement (system 5): a cross join of the two sets scored by
-- cosine distance, keeping k rows per A photo with LIMIT BY. It runs anywhere, including
-- clickhouse-client; it compares |A| x |B| pairs, so keep it for sets of a few thousand. For
-- larger sets use `clipsql join`, which streams A in batches.
--
-- Parameters:
--   a_keyword String  keyword of set A
--   b_keyword String  keyword of set B
--   k UInt32 = 5  neighbours per A photo
--   table Identifier  the model's embeddings table, embeddings_<model>; clipsql fills it in (--param model=M)
-- Columns: a_photo_id, b_photo_id, distance
WITH
    a AS (
        SELECT photo_id, embedding FROM {table:Identifier}
        WHERE photo_id IN (SELECT photo_id FROM keywords WHERE lower(keyword) = lower({a_keyword:String}))
    ),
    b AS (
        SELECT photo_id, embedding FROM {table:Identifier}
        WHERE photo_id IN (SELECT photo_id FROM keywords WHERE lower(keyword) = lower({b_keyword:String}))
    )
SELECT a.photo_id AS a_photo_id, b.photo_id AS b_photo_id, cosineDistance(a.embedding, b.embedding) AS distance
FROM a CROSS JOIN b
WHERE a.photo_id != b.photo_id
ORDER BY a_photo_id, distance, b_photo_id
LIMIT {k:UInt32} BY a_photo_id;
