-- myscale_index_status: the build status of a table's MyScale vector index (Built, InProgress, Error).
--
-- Parameters:
--   table String  the embeddings table
-- Columns: status, latest_failed_part_reason
SELECT status, latest_failed_part_reason
FROM system.vector_indices
WHERE database = currentDatabase() AND table = {table:String} AND name = 'vec';
