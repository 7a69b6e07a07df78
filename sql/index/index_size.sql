-- index_size: bytes on disk of a table's ClickHouse vector_similarity index (0 if not built).
--
-- Parameters:
--   table String  the embeddings table
-- Columns: bytes
SELECT sum(data_compressed_bytes) AS bytes
FROM system.data_skipping_indices
WHERE database = currentDatabase() AND table = {table:String} AND name = 'vec';
