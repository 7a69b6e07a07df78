-- photos: one row per Unsplash photo, the columns of the dataset's photos.tsv.
--
-- Text fields are plain String ('' when the dataset leaves them empty); numbers, flags and
-- timestamps are Nullable because the dataset often leaves them empty.
CREATE TABLE IF NOT EXISTS {table:Identifier}
(
    photo_id String,
    photo_url String,
    photo_image_url String,
    photo_submitted_at Nullable(DateTime64(6)),
    photo_featured Nullable(Bool),
    photo_width Nullable(Int32),
    photo_height Nullable(Int32),
    photo_aspect_ratio Nullable(Float32),
    photo_description String,
    photographer_username LowCardinality(String),
    photographer_first_name String,
    photographer_last_name String,
    exif_camera_make LowCardinality(String),
    exif_camera_model LowCardinality(String),
    exif_iso Nullable(Int32),
    exif_aperture_value String,
    exif_focal_length String,
    exif_exposure_time String,
    photo_location_name String,
    photo_location_latitude Nullable(Float64),
    photo_location_longitude Nullable(Float64),
    photo_location_country LowCardinality(String),
    photo_location_city LowCardinality(String),
    stats_views Nullable(Int64),
    stats_downloads Nullable(Int64),
    ai_description String,
    ai_primary_landmark_name String,
    ai_primary_landmark_latitude Nullable(Float64),
    ai_primary_landmark_longitude Nullable(Float64),
    ai_primary_landmark_confidence String
)
ENGINE = MergeTree
ORDER BY photo_id;
