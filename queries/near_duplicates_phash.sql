-- near_duplicates_phash: pairs of photos whose perceptual hashes differ in at most max_hamming bits.
--
-- The perceptual tier of near-duplicate detection (system 3): the same picture re-encoded,
-- resized or recoloured keeps most of its 64-bit DCT hash. Measured on the 300 sample images
-- (bench/duplicates_calibration.py): within 10 bits are 99.7% of JPEG re-encodes, 99.3% of
-- half-size copies, 97% of +20% brightness copies, but only 57% of 5% crops (the embedding
-- tier catches those) and 0.03% of pairs of different pictures. Byte-identical pairs are
-- left to exact_duplicates. Compares every pair (|photos|^2 / 2): ~4 s at 25k photos on 2 cores.
--
-- Parameters:
--   max_hamming UInt8 = 10  the largest Hamming distance (bits of 64) still called a duplicate
-- Columns: photo_a, photo_b, hamming
SELECT a.photo_id AS photo_a, b.photo_id AS photo_b, toUInt8(bitCount(bitXor(a.phash, b.phash))) AS hamming
FROM photo_hashes AS a
CROSS JOIN photo_hashes AS b
WHERE a.photo_id < b.photo_id
  AND a.sha256 != b.sha256
  AND bitCount(bitXor(a.phash, b.phash)) <= {max_hamming:UInt8}
ORDER BY hamming, photo_a, photo_b;
