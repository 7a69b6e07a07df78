-- conversions: each download of a photo, with the search keyword that led to it (if any).
--
-- Sorted by photo_id so that "downloads of these photos" reads only their granules.
CREATE TABLE IF NOT EXISTS {table:Identifier}
(
    converted_at Nullable(DateTime64(6)),
    conversion_type LowCardinality(String),
    keyword String,
    photo_id String,
    anonymous_user_id String,
    conversion_country LowCardinality(String)
)
ENGINE = MergeTree
ORDER BY (photo_id, keyword);
