-- sample_vectors: a reproducible sample of stored vectors, used as queries by `clipsql verify`.
--
-- Parameters:
--   table Identifier  the model's embeddings table, embeddings_<model>
--   seed UInt64  changes which vectors are drawn
--   n UInt32  how many
-- Columns: photo_id, embedding
SELECT photo_id, embedding
FROM {table:Identifier}
ORDER BY cityHash64(photo_id, {seed:UInt64})
LIMIT {n:UInt32}
