-- keyword_vector: the stored text vector of one keyword.
--
-- Parameters:
--   table Identifier  the model's keyword table, keyword_vectors_<model>
--   keyword String  the keyword
SELECT embedding FROM {table:Identifier} WHERE keyword = {keyword:String} LIMIT 1
