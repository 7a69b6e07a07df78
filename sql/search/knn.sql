-- knn: the k photos nearest to a query vector, through the model's HNSW index, with details.
--
-- The inner query is the shape ClickHouse answers from a vector_similarity index
-- (ORDER BY distance to a constant vector, LIMIT n); the outer query drops the query photo
-- itself and joins the photo details for the few rows left.
--
-- Parameters:
--   table Identifier  the model's embeddings table, embeddings_<model>
--   q Array(Float32)  the query vector (L2-normalised)
--   fetch UInt32  candidates taken from the index: k, plus one when a photo is excluded
--   exclude String  a photo id to leave out ('' for none)
--   k UInt32  how many results
-- Columns: photo_id, distance, photo_image_url, photo_description, photographer_username
SELECT
    n.photo_id AS photo_id,
    n.distance AS distance,
    p.photo_image_url AS photo_image_url,
    p.photo_description AS photo_description,
    p.photographer_username AS photographer_username
FROM
(
    SELECT photo_id, cosineDistance(embedding, {q:Array(Float32)}) AS distance
    FROM {table:Identifier}
    ORDER BY distance
    LIMIT {fetch:UInt32}
) AS n
LEFT JOIN photos AS p ON p.photo_id = n.photo_id
WHERE n.photo_id != {exclude:String}
ORDER BY distance, photo_id
LIMIT {k:UInt32};
