-- nearest: score candidate neighbours of a query vector and say which ones qualify.
--
-- ${candidates} is one of the candidates_*.sql statements (HNSW index, IVF cells or exact
-- scan). Each candidate gets its distance in the chosen ${metric} (cosineDistance or
-- L2Distance) and `passes`: not the excluded photo, within the radius, and in the selection
-- (${filter}). Returning the candidates that do not pass lets clipsql see when post-filtering
-- left fewer than k rows, and fetch more instead of silently answering short. What a result
-- shows about the photo comes with its vector (copied into the embeddings table at load).
--
-- Parameters:
--   q Array(Float32)  the query vector
--   exclude String  a photo id to leave out ('' for none)
--   radius Float64  the largest distance that passes (inf for kNN)
-- Columns: photo_id, distance, passes, photo_image_url, photo_description, photographer_username
SELECT
    photo_id,
    ${metric}(embedding, {q:Array(Float32)}) AS distance,
    toBool(photo_id != {exclude:String} AND distance <= {radius:Float64} AND (${filter})) AS passes,
    photo_image_url,
    photo_description,
    photographer_username
FROM (${candidates}) AS candidates
ORDER BY distance, photo_id
