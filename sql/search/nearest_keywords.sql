-- nearest_keywords: the k keywords whose text vectors are nearest to a query vector.
--
-- Parameters:
--   table Identifier  the model's keyword table, keyword_vectors_<model>
--   q Array(Float32)  the query vector (an image's, a photo's or another keyword's)
--   exclude String  a keyword to leave out ('' for none)
--   k UInt32  how many keywords
-- Columns: keyword, distance
SELECT keyword, cosineDistance(embedding, {q:Array(Float32)}) AS distance
FROM {table:Identifier}
WHERE keyword != {exclude:String}
ORDER BY distance, keyword
LIMIT {k:UInt32}
