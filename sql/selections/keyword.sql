-- keyword: photos tagged with a keyword (AI or user suggested), case-insensitive.
--
-- Parameters:
--   value String  the keyword
photo_id IN (SELECT photo_id FROM keywords WHERE lower(keyword) = lower({value:String}))
