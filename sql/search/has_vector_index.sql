-- has_vector_index: 1 if a table (or, on a cluster, its local_ shard table) carries a vector_similarity index.
--
-- Parameters:
--   table String  the embeddings table
-- Columns: present
SELECT count() > 0 AS present
FROM system.data_skipping_indices
WHERE database = currentDatabase() AND table IN ({table:String}, concat('local_', {table:String}))
  AND type = 'vector_similarity';
