-- models: which embedding models are loaded, their table, dimension and vector count.
CREATE TABLE IF NOT EXISTS models
(
    model String,
    table_name String,
    dim UInt32,
    encoder LowCardinality(String),
    vectors UInt64,
    loaded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY model;
