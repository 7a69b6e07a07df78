-- keywords: the keywords attached to each photo (by AI services or suggested by users).
CREATE TABLE IF NOT EXISTS {table:Identifier}
(
    photo_id String,
    keyword String,
    ai_service_1_confidence Nullable(Float64),
    ai_service_2_confidence Nullable(Float64),
    suggested_by_user Nullable(Bool)
)
ENGINE = MergeTree
ORDER BY (photo_id, keyword);
