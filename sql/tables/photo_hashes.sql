-- photo_hashes: the 64-bit perceptual hash (DCT hash) and sha256 of each photo's current image.
--
-- Two photos with the same sha256 are byte-identical copies; a small Hamming distance between
-- hashes, bitCount(bitXor(a.phash, b.phash)), means the same picture re-encoded, resized or
-- slightly cropped (see queries/near_duplicates_phash.sql and `clipsql duplicates`).
CREATE TABLE IF NOT EXISTS {table:Identifier}
(
    photo_id String,
    sha256 String,
    phash UInt64,
    image_url String
)
ENGINE = MergeTree
ORDER BY photo_id;
