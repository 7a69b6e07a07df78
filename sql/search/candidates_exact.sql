-- candidates_exact: every stored vector that passes the filter and lies within the radius,
-- nearest first, by a full scan (use_skip_indexes = 0: no index is consulted; reading through
-- mmap made the scan ~20% faster on chDB, measured).
--
-- ${metric} is cosineDistance or L2Distance; ${filter} is clipsql's composition of
-- sql/selections/ fragments (their values bound), `1` when there is none.
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
  AND ${metric}(embedding, {q:Array(Float32)}) <= {radius:Float64}
  AND (${filter})
ORDER BY ${metric}(embedding, {q:Array(Float32)}), photo_id
LIMIT {fetch:UInt64}
SETTINGS use_skip_indexes = 0, local_filesystem_read_method = 'mmap', min_bytes_to_use_mmap_io = 1
