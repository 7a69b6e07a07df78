"""The Unsplash Lite tables: column names and types, from the dataset's documentation.

One source of truth for extract (parsing TSV into typed Arrow) and for checking that the DDL in
`sql/tables/` agrees (a test compares them). Every column is nullable in Arrow because the
dataset leaves many fields empty; the DDL decides which are Nullable in ClickHouse.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us")

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "photos": pa.schema(
        [
            ("photo_id", pa.string()),
            ("photo_url", pa.string()),
            ("photo_image_url", pa.string()),
            ("photo_submitted_at", TIMESTAMP),
            ("photo_featured", pa.bool_()),
            ("photo_width", pa.int32()),
            ("photo_height", pa.int32()),
            ("photo_aspect_ratio", pa.float32()),
            ("photo_description", pa.string()),
            ("photographer_username", pa.string()),
            ("photographer_first_name", pa.string()),
            ("photographer_last_name", pa.string()),
            ("exif_camera_make", pa.string()),
            ("exif_camera_model", pa.string()),
            ("exif_iso", pa.int32()),
            ("exif_aperture_value", pa.string()),
            ("exif_focal_length", pa.string()),
            ("exif_exposure_time", pa.string()),
            ("photo_location_name", pa.string()),
            ("photo_location_latitude", pa.float64()),
            ("photo_location_longitude", pa.float64()),
            ("photo_location_country", pa.string()),
            ("photo_location_city", pa.string()),
            ("stats_views", pa.int64()),
            ("stats_downloads", pa.int64()),
            ("ai_description", pa.string()),
            ("ai_primary_landmark_name", pa.string()),
            ("ai_primary_landmark_latitude", pa.float64()),
            ("ai_primary_landmark_longitude", pa.float64()),
            ("ai_primary_landmark_confidence", pa.string()),  # varchar in the official DDL
        ]
    ),
    "keywords": pa.schema(
        [
            ("photo_id", pa.string()),
            ("keyword", pa.string()),
            ("ai_service_1_confidence", pa.float64()),
            ("ai_service_2_confidence", pa.float64()),
            ("suggested_by_user", pa.bool_()),
        ]
    ),
    "collections": pa.schema(
        [
            ("photo_id", pa.string()),
            ("collection_id", pa.string()),
            ("collection_title", pa.string()),
            ("photo_collected_at", TIMESTAMP),
        ]
    ),
    "conversions": pa.schema(
        [
            ("converted_at", TIMESTAMP),
            ("conversion_type", pa.string()),
            ("keyword", pa.string()),
            ("photo_id", pa.string()),
            ("anonymous_user_id", pa.string()),
            ("conversion_country", pa.string()),
        ]
    ),
    "colors": pa.schema(
        [
            ("photo_id", pa.string()),
            ("hex", pa.string()),
            ("red", pa.int32()),
            ("green", pa.int32()),
            ("blue", pa.int32()),
            ("keyword", pa.string()),
            ("coverage", pa.float64()),
            ("score", pa.float64()),
        ]
    ),
}

TABLES = list(TABLE_SCHEMAS)

# Other spellings of a column seen in releases of the dataset (the official DDL says ai_coverage).
COLUMN_ALIASES: dict[str, dict[str, str]] = {
    "colors": {"ai_coverage": "coverage", "ai_score": "score"},
}

# Columns without which a row means nothing: such rows are rejected, not loaded with blanks.
REQUIRED_COLUMNS: dict[str, list[str]] = {
    "photos": ["photo_id", "photo_image_url"],
    "keywords": ["photo_id", "keyword"],
    "collections": ["photo_id", "collection_id"],
    "conversions": ["photo_id", "converted_at"],
    "colors": ["photo_id", "hex"],
}

EMBEDDING_SCHEMA = pa.schema(
    [
        ("photo_id", pa.string()),
        ("model", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("sha256", pa.string()),
        ("image_url", pa.string()),
        ("embedded_at", pa.timestamp("ms", tz="UTC")),
    ]
)

FAILURE_SCHEMA = pa.schema(
    [
        ("photo_id", pa.string()),
        ("model", pa.string()),
        ("url", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("failed_at", pa.timestamp("ms", tz="UTC")),
    ]
)

HASH_SCHEMA = pa.schema(
    [
        ("photo_id", pa.string()),
        ("image_url", pa.string()),
        ("sha256", pa.string()),
        ("phash", pa.uint64()),
        ("hashed_at", pa.timestamp("ms", tz="UTC")),
    ]
)
