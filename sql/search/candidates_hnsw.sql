-- candidates_hnsw: the {fetch} stored vectors nearest to the query, through the vector index.
--
-- The shape ClickHouse answers from a vector_similarity index (and MyScale from its MSTG
-- index): ORDER BY the index's own distance function to a constant vector, LIMIT n, no WHERE
-- (a WHERE would make the engine post-filter inside the index scan and return fewer than n
-- rows without saying so). ${index_metric} is cosineDistance, or `distance` on MyScale;
-- ${settings} is empty or a SETTINGS clause with the search knobs (integers clipsql checked).
--
-- Parameters:
--   table Identifier  the model's embeddings table, embeddings_<model>
--   q Array(Float32)  the query vector
--   fetch UInt32  how many candidates
SELECT photo_id, embedding, photo_image_url, photo_description, photographer_username, ${index_metric}(embedding, {q:Array(Float32)}) AS index_distance
FROM {table:Identifier}
ORDER BY index_distance
LIMIT {fetch:UInt32}
${settings}
