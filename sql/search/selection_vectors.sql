-- selection_vectors: the stored vectors of the photos in a selection, by photo id.
--
-- ${filter} is clipsql's composition of sql/selections/ fragments (values bound), `1` for all.
--
-- Parameters:
--   table Identifier  the model's embeddings table, embeddings_<model>
-- Columns: photo_id, embedding
SELECT photo_id, embedding
FROM {table:Identifier}
WHERE ${filter}
ORDER BY photo_id
