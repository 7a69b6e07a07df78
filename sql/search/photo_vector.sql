-- photo_vector: the stored vector of one photo for one model.
--
-- Parameters:
--   table Identifier  the model's embeddings table, embeddings_<model>
--   photo_id String  the photo
SELECT embedding FROM {table:Identifier} WHERE photo_id = {photo_id:String} LIMIT 1;
