-- add_vector_index: the HNSW index for nearest-neighbour search, built once after bulk load.
--
-- Template slots (filled by clipsql with checked integers and names, since index arguments
-- cannot be query parameters): metric ('cosineDistance' or 'L2Distance'), dim, quantization
-- ('f32', 'bf16', 'f16', 'i8', 'b1'), m (edges per node), ef_construction.
ALTER TABLE {table:Identifier}
    ADD INDEX IF NOT EXISTS vec embedding TYPE vector_similarity('hnsw', ${metric}, ${dim}, ${quantization}, ${m}, ${ef_construction}) GRANULARITY 100000000;
