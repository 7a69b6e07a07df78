-- keyword_vectors: every distinct keyword encoded with one model's text tower (keyword_vectors_<model>).
--
-- Lets SQL and `clipsql keywords` find keywords near a keyword, a photo, an image or a text.
CREATE TABLE IF NOT EXISTS {table:Identifier}
(
    keyword String,
    embedding Array(Float32) CODEC(NONE),
    CONSTRAINT vector_len CHECK length(embedding) = {dim:UInt32}
)
ENGINE = MergeTree
ORDER BY keyword;
