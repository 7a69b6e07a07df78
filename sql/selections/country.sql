-- country: photos taken in a country (photo_location_country, case-insensitive).
--
-- Parameters:
--   value String  the country name as the dataset writes it
photo_id IN (SELECT photo_id FROM photos WHERE lower(photo_location_country) = lower({value:String}))
