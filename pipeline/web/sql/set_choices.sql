-- set_choices: the image sets offered in the web app's set menus, largest first per kind.
--
-- Collections (labelled image folders load as collections `class:<label>`), keywords and
-- countries, each with its number of photos. The value is what a `KIND:VALUE` selection
-- takes (a collection by its id, the others by name); the label is what people read.
--
-- Parameters:
--   n UInt32  how many choices per kind
-- Columns: kind, value, label, photos
SELECT kind, value, label, photos
FROM
(
    SELECT 'collection' AS kind, collection_id AS value, any(collection_title) AS label,
           uniqExact(photo_id) AS photos, 1 AS kind_order
    FROM collections
    GROUP BY collection_id
    ORDER BY photos DESC, value
    LIMIT {n:UInt32}
    UNION ALL
    SELECT 'keyword' AS kind, lower(keyword) AS value, lower(keyword) AS label, uniqExact(photo_id) AS photos,
           2 AS kind_order
    FROM keywords
    GROUP BY value
    ORDER BY photos DESC, value
    LIMIT {n:UInt32}
    UNION ALL
    SELECT 'country' AS kind, toString(photo_location_country) AS value, toString(photo_location_country) AS label,
           count() AS photos, 3 AS kind_order
    FROM photos
    WHERE photo_location_country != ''
    GROUP BY value
    ORDER BY photos DESC, value
    LIMIT {n:UInt32}
)
ORDER BY kind_order, photos DESC, value;
