-- photographer: photos by one photographer (their Unsplash username).
--
-- Parameters:
--   value String  the photographer's username
photo_id IN (SELECT photo_id FROM photos WHERE photographer_username = {value:String})
