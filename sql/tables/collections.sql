-- collections: which user collections each photo was added to, and when.
CREATE TABLE IF NOT EXISTS {table:Identifier}
(
    photo_id String,
    collection_id String,
    collection_title String,
    photo_collected_at Nullable(DateTime64(6))
)
ENGINE = MergeTree
ORDER BY (photo_id, collection_id);
