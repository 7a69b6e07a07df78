-- gallery_page: one page of the photos a key image can be picked from, with the total count.
--
-- Only photos that have a vector for the model qualify (a key image without one cannot be
-- searched with). ${filter} is the key set (sql/selections/ fragments, values bound);
-- `text` narrows to photos with a keyword or description containing it (case-insensitive,
-- '' for no narrowing). `seed` 0 orders by photo id; any other seed is a stable shuffle.
--
-- Parameters:
--   table Identifier  the model's embeddings table, embeddings_<model>
--   text String  a keyword or word to look for ('' for all)
--   seed UInt64  0 for id order, else the shuffle's seed
--   limit UInt32  photos per page
--   offset UInt64  photos skipped (page - 1) * limit
-- Columns: photo_id, photo_description, photographer_username, total
SELECT photo_id, photo_description, photographer_username, count() OVER () AS total
FROM photos
WHERE photo_id IN (SELECT photo_id FROM {table:Identifier})
  AND (${filter})
  AND ({text:String} = ''
       OR positionCaseInsensitiveUTF8(photo_description, {text:String}) > 0
       OR photo_id IN (SELECT photo_id FROM keywords WHERE positionCaseInsensitiveUTF8(keyword, {text:String}) > 0))
ORDER BY if({seed:UInt64} = 0, 0, sipHash64(photo_id, {seed:UInt64})), photo_id
LIMIT {limit:UInt32} OFFSET {offset:UInt64};
