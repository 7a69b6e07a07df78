-- candidates_exact: every stored vector that passes the filter and lies within the radius,
-- nearest first, by a full scan (use_skip_indexes = 0: no index is consulted). Reading
-- through mmap without verifying block checksums halves the scan (bench/: 11.1 -> 6.6 ms at
-- 25k, 39.8 -> 20.6 ms at 100k); the vectors can always be rebuilt from their Parquet parts.
--
-- ${metric} is cosineDistance or L2Distance; ${filter} is clipsql's composition of
-- sql/selections/ fragments (their values bound), `1` when there is none; ${within_radius} is
-- `${metric}(embedding, {q}) <= {radius}` for a range query and `1` for kNN (a distance
-- condition in WHERE costs a kNN scan ~3 ms at 25k, so it is left out when not needed).
--
-- Parameters:
--   table Identifier  the model's embeddings table, embeddings_<model>
--   q Array(Float32)  the query vector
--   exclude String  a photo id to leave out ('' for none)
--   radius Float64  the largest distance kept
--   fetch UInt64  how many rows at most
SELECT photo_id, embedding, photo_image_url, photo_description, photographer_username
FROM {table:Identifier}
WHERE photo_id != {exclude:String}
  AND (${within_radius})
  AND (${filter})
ORDER BY ${metric}(embedding, {q:Array(Float32)}), photo_id
LIMIT {fetch:UInt64}
SETTINGS use_skip_indexes = 0, local_filesystem_read_method = 'mmap', min_bytes_to_use_mmap_io = 1, checksum_on_read = 0
