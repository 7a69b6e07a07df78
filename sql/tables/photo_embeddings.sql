-- photo_embeddings: every model's vectors in one place, for SQL that names a model.
--
-- A Merge table over the per-model tables embeddings_*: filter it with WHERE model = '...'.
-- Nearest-neighbour search through the HNSW index reads the per-model table directly.
CREATE TABLE IF NOT EXISTS photo_embeddings
(
    photo_id String,
    model LowCardinality(String),
    embedding Array(Float32),
    sha256 String,
    image_url String,
    embedded_at DateTime64(3, 'UTC')
)
ENGINE = Merge(currentDatabase(), '^embeddings_');
