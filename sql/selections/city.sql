-- city: photos taken in a city (photo_location_city, case-insensitive).
--
-- Parameters:
--   value String  the city name as the dataset writes it
photo_id IN (SELECT photo_id FROM photos WHERE lower(photo_location_city) = lower({value:String}))
