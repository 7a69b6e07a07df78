-- myscale_add_vector_index: MyScale's MSTG vector index with cosine distance (MyScale Cloud only).
--
-- MyScale builds it in the background; clipsql waits until system.vector_indices says Built.
-- Queries must then ORDER BY distance(embedding, query) LIMIT k to use it.
--
-- Parameters:
--   table Identifier  the embeddings table
ALTER TABLE {table:Identifier} ADD VECTOR INDEX vec embedding TYPE MSTG('metric_type=Cosine');
