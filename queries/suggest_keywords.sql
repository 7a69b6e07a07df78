-- suggest_keywords: keywords for untagged photos, by a vote of their nearest tagged neighbours.
--
-- For each photo without keywords (or only the one given), its k nearest tagged photos vote
-- for their keywords, each vote weighted by similarity (1 - cosine distance); the n keywords
-- with the most weight are suggested. Compares the photos asked about with every tagged photo,
-- so give photo_id, or keep the untagged set small (a few hundred).
--
-- Parameters:
--   photo_id String = ''  one photo to suggest keywords for ('' for every untagged photo)
--   k UInt32 = 10  neighbours that vote
--   n UInt32 = 5  keywords per photo
--   table Identifier  the model's embeddings table, embeddings_<model>; clipsql fills it in (--param model=M)
-- Columns: photo_id, keyword, score, votes
WITH
    tagged AS (SELECT DISTINCT photo_id FROM keywords),
    asked AS
    (
        SELECT photo_id, embedding FROM {table:Identifier}
        WHERE if({photo_id:String} = '', photo_id NOT IN (SELECT photo_id FROM tagged), photo_id = {photo_id:String})
    ),
    voters AS
    (
        SELECT photo_id, embedding FROM {table:Identifier}
        WHERE photo_id IN (SELECT photo_id FROM tagged)
    ),
    neighbours AS
    (
        SELECT a.photo_id AS photo_id, v.photo_id AS voter, 1 - cosineDistance(a.embedding, v.embedding) AS weight
        FROM asked AS a CROSS JOIN voters AS v
        WHERE a.photo_id != v.photo_id
        ORDER BY photo_id, weight DESC, voter
        LIMIT {k:UInt32} BY photo_id
    )
SELECT n.photo_id AS photo_id, kw.keyword AS keyword, sum(n.weight) AS score, count() AS votes
FROM neighbours AS n
INNER JOIN keywords AS kw ON kw.photo_id = n.voter
WHERE (n.photo_id, kw.keyword) NOT IN (SELECT photo_id, keyword FROM keywords)
GROUP BY photo_id, keyword
ORDER BY photo_id, score DESC, keyword
LIMIT {n:UInt32} BY photo_id;
