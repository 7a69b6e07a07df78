-- embeddings: the image vectors of one model (one such table per model, embeddings_<model>).
--
-- The vector length is checked on insert; vectors are stored without compression because
-- float noise does not compress and decompressing it slows every exact scan. `cell` is the
-- vector's IVF cell (its nearest k-means centroid in ivf_<model>, 0 when IVF is off); sorting
-- by it first lets an IVF query read only the granules of the cells it probes. Granules of 1024
-- rows (2 MB of 512-d vectors, not the default 8192 rows / 10 MB) keep reading the vectors of
-- the few rows a search returns cheap: each is read with its whole granule. The photo's URL,
-- description and photographer are copied here from `photos` at load time, so a search reads
-- what it shows from the rows it found, in the same statement (one round trip, not two).
CREATE TABLE IF NOT EXISTS {table:Identifier}
(
    photo_id String,
    model LowCardinality(String),
    embedding Array(Float32) CODEC(NONE),
    sha256 String,
    image_url String,
    embedded_at DateTime64(3, 'UTC'),
    cell UInt32 DEFAULT 0,
    photo_image_url String DEFAULT '',
    photo_description String DEFAULT '',
    photographer_username LowCardinality(String) DEFAULT '',
    CONSTRAINT vector_len CHECK length(embedding) = {dim:UInt32}
)
ENGINE = MergeTree
ORDER BY (cell, photo_id)
SETTINGS index_granularity = 1024;
