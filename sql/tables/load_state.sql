-- load_state: the fingerprint of what each table was last loaded from, so an unchanged
-- table is not reloaded.
CREATE TABLE IF NOT EXISTS load_state
(
    object String,
    fingerprint String,
    rows UInt64,
    loaded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY object;
