-- popular_candidate_keywords: the top download keywords of the most-downloaded of a photo's k neighbours.
--
-- The tutorial's second analytics step: among the k photos most similar to the target (as in
-- similar_downloads), take the one downloaded most often (ties: the nearer one) and list the
-- search keywords that led to its downloads, with counts. Downloads without a keyword are
-- not counted.
--
-- Parameters:
--   photo_id String  the target photo
--   k UInt32 = 10  how many neighbours are candidates
--   n UInt32 = 5  how many keywords
--   table Identifier  the model's embeddings table, embeddings_<model>; clipsql fills it in (--param model=M)
-- Columns: keyword, downloads
WITH
    (
        SELECT embedding FROM {table:Identifier} WHERE photo_id = {photo_id:String} LIMIT 1
    ) AS target,
    neighbours AS
    (
        SELECT photo_id, cosineDistance(embedding, target) AS distance
        FROM
        (
            SELECT photo_id, embedding FROM {table:Identifier}
            ORDER BY cosineDistance(embedding, target)
            LIMIT {k:UInt32} + 1
        )
        WHERE photo_id != {photo_id:String}
        ORDER BY distance, photo_id
        LIMIT {k:UInt32}
    ),
    most_downloaded AS
    (
        SELECT n.photo_id AS photo_id
        FROM neighbours AS n
        LEFT JOIN
        (
            SELECT photo_id, count() AS downloads
            FROM conversions
            WHERE conversion_type = 'download' AND photo_id IN (SELECT photo_id FROM neighbours)
            GROUP BY photo_id
        ) AS d ON d.photo_id = n.photo_id
        ORDER BY d.downloads DESC, n.distance, n.photo_id
        LIMIT 1
    )
SELECT keyword, count() AS downloads
FROM conversions
WHERE conversion_type = 'download' AND keyword != '' AND photo_id IN (SELECT photo_id FROM most_downloaded)
GROUP BY keyword
ORDER BY downloads DESC, keyword
LIMIT {n:UInt32};
