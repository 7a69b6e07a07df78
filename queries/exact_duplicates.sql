-- exact_duplicates: pairs of photos whose images are byte-identical (same sha256).
--
-- The exact tier of near-duplicate detection (system 3): a re-upload of the very same file.
-- Each pair is listed once (photo_a < photo_b).
--
-- Parameters: none
-- Columns: photo_a, photo_b, hamming
SELECT a.photo_id AS photo_a, b.photo_id AS photo_b, toUInt8(0) AS hamming
FROM photo_hashes AS a
INNER JOIN photo_hashes AS b ON a.sha256 = b.sha256
WHERE a.photo_id < b.photo_id
ORDER BY photo_a, photo_b;
