-- candidates_ivf: the {fetch} stored vectors nearest to the query among the nprobe IVF cells
-- whose k-means centroids are nearest to it (system 2's Voronoi partition, in plain SQL).
--
-- The embeddings table is sorted by (cell, photo_id), so `cell IN (...)` reads only the
-- granules of the probed cells; this needs no vector index and runs on any ClickHouse
-- (use_skip_indexes = 0 keeps an HNSW index on the same table out of it; reads as in
-- candidates_exact.sql).
--
-- Parameters:
--   table Identifier  the model's embeddings table, embeddings_<model>
--   centroids Identifier  its centroid table, ivf_<model>
--   q Array(Float32)  the query vector
--   nprobe UInt32  how many cells to scan
--   fetch UInt32  how many candidates
SELECT photo_id, embedding, photo_image_url, photo_description, photographer_username
FROM {table:Identifier}
WHERE cell IN (
    SELECT cell FROM {centroids:Identifier}
    ORDER BY cosineDistance(centroid, {q:Array(Float32)})
    LIMIT {nprobe:UInt32}
)
ORDER BY cosineDistance(embedding, {q:Array(Float32)}), photo_id
LIMIT {fetch:UInt32}
SETTINGS use_skip_indexes = 0, local_filesystem_read_method = 'mmap', min_bytes_to_use_mmap_io = 1, checksum_on_read = 0
