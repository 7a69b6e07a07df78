-- ivf_centroids: the k-means centroids of one model's vectors (one such table per model, ivf_<model>).
--
-- Cell c holds the vectors whose nearest centroid is c; `vectors` counts them. Written at
-- load time together with the embeddings table's `cell` column.
CREATE TABLE IF NOT EXISTS {table:Identifier}
(
    cell UInt32,
    centroid Array(Float32) CODEC(NONE),
    vectors UInt64
)
ENGINE = MergeTree
ORDER BY cell;
