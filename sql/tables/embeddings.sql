-- embeddings: the image vectors of one model (one such table per model, embeddings_<model>).
--
-- The vector length is checked on insert; vectors are stored without compression because
-- float noise does not compress and decompressing it slows every exact scan.
CREATE TABLE IF NOT EXISTS {table:Identifier}
(
    photo_id String,
    model LowCardinality(String),
    embedding Array(Float32) CODEC(NONE),
    sha256 String,
    image_url String,
    embedded_at DateTime64(3, 'UTC'),
    CONSTRAINT vector_len CHECK length(embedding) = {dim:UInt32}
)
ENGINE = MergeTree
ORDER BY photo_id;
