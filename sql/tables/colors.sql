-- colors: the dominant colours of each photo with their coverage and score.
CREATE TABLE IF NOT EXISTS {table:Identifier}
(
    photo_id String,
    hex String,
    red Nullable(Int32),
    green Nullable(Int32),
    blue Nullable(Int32),
    keyword LowCardinality(String),
    coverage Nullable(Float64),
    score Nullable(Float64)
)
ENGINE = MergeTree
ORDER BY (photo_id, hex);
