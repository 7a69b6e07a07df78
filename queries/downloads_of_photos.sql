-- downloads_of_photos: how often each of a list of photos was downloaded (0 included), in the list's order.
--
-- The tutorial's first analytics step for any result list: a search by text or by an uploaded
-- image has no target photo id, so the candidates are passed in as ids (nearest first).
-- Each distinct id is returned once, at its first position; ids that are not in the photos
-- table count 0 downloads like photos nobody downloaded.
--
-- Parameters:
--   ids Array(String)  the photo ids, in the order the rows should come back
-- Columns: photo_id, downloads
--
-- Example: clickhouse-client --param_ids="['XMyPniM9LF0','-egpjNREk6M']" --queries-file queries/downloads_of_photos.sql
WITH given AS
    (
        SELECT id, position
        FROM
        (
            SELECT arrayDistinct({ids:Array(String)}) AS distinct_ids
        )
        ARRAY JOIN distinct_ids AS id, arrayEnumerate(distinct_ids) AS position
    )
SELECT g.id AS photo_id, toUInt64(d.downloads) AS downloads
FROM given AS g
LEFT JOIN
(
    SELECT photo_id, count() AS downloads
    FROM conversions
    WHERE conversion_type = 'download' AND photo_id IN {ids:Array(String)}
    GROUP BY photo_id
) AS d ON d.photo_id = g.id
ORDER BY g.position;
