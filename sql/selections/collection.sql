-- collection: photos in a collection, named by its id or its title.
--
-- Parameters:
--   value String  the collection id or title
photo_id IN (SELECT photo_id FROM collections WHERE collection_id = {value:String} OR collection_title = {value:String})
