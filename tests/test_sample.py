"""Checks on the shipped offline sample (pipeline/sample), the data `clipsql demo` runs on.

Only reads files: no network, no build step. The sample is produced by scripts/build_sample.py; if a
test fails after a rebuild, the script changed the format that the loaders rely on.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[1] / "pipeline" / "sample"

# The Unsplash Lite headers, in order (see scripts/build_sample.py).
HEADERS: dict[str, list[str]] = {
    "photos.tsv000": [
        "photo_id", "photo_url", "photo_image_url", "photo_submitted_at", "photo_featured",
        "photo_width", "photo_height", "photo_aspect_ratio", "photo_description",
        "photographer_username", "photographer_first_name", "photographer_last_name",
        "exif_camera_make", "exif_camera_model", "exif_iso", "exif_aperture_value",
        "exif_focal_length", "exif_exposure_time", "photo_location_name", "photo_location_latitude",
        "photo_location_longitude", "photo_location_country", "photo_location_city", "stats_views",
        "stats_downloads", "ai_description", "ai_primary_landmark_name", "ai_primary_landmark_latitude",
        "ai_primary_landmark_longitude", "ai_primary_landmark_confidence",
    ],
    "keywords.tsv000": [
        "photo_id", "keyword", "ai_service_1_confidence", "ai_service_2_confidence", "suggested_by_user",
    ],
    "collections.tsv000": ["photo_id", "collection_id", "collection_title", "photo_collected_at"],
    "conversions.tsv000": [
        "converted_at", "conversion_type", "keyword", "photo_id", "anonymous_user_id", "conversion_country",
    ],
    "conversions.tsv001": [
        "converted_at", "conversion_type", "keyword", "photo_id", "anonymous_user_id", "conversion_country",
    ],
    "colors.tsv000": ["photo_id", "hex", "red", "green", "blue", "keyword", "coverage", "score"],
}  # fmt: skip

PHOTO_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


def read_tsv(name: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows, read with the Unsplash Lite dialect (tab, double-quote quoting)."""
    with (SAMPLE / name).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quotechar='"'))
    return rows[0], rows[1:]


def read_dicts(name: str) -> list[dict[str, str]]:
    """Rows as dicts keyed by the header."""
    header, rows = read_tsv(name)
    return [dict(zip(header, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def photos() -> list[dict[str, str]]:
    return read_dicts("photos.tsv000")


@pytest.fixture(scope="module")
def photo_ids(photos: list[dict[str, str]]) -> set[str]:
    return {p["photo_id"] for p in photos}


@pytest.fixture(scope="module")
def conversions() -> list[dict[str, str]]:
    return read_dicts("conversions.tsv000") + read_dicts("conversions.tsv001")


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_header_and_row_width(name: str) -> None:
    header, rows = read_tsv(name)
    assert header == HEADERS[name]
    assert rows, f"{name} has no data rows"
    bad = [i for i, row in enumerate(rows, start=2) if len(row) != len(header)]
    assert not bad, f"{name}: lines with the wrong number of fields: {bad[:5]}"


def test_files_end_with_newline_and_no_crlf() -> None:
    for name in HEADERS:
        data = (SAMPLE / name).read_bytes()
        assert data.endswith(b"\n") and b"\r\n" not in data, name


def test_conversions_split_in_two_files_each_with_header() -> None:
    files = sorted(p.name for p in SAMPLE.glob("conversions.tsv*"))
    assert files == ["conversions.tsv000", "conversions.tsv001"]
    sizes = [len(read_tsv(name)[1]) for name in files]
    assert min(sizes) > 0.4 * sum(sizes)  # roughly half each


def test_photo_ids_unique_and_unsplash_shaped(photos: list[dict[str, str]]) -> None:
    ids = [p["photo_id"] for p in photos]
    assert len(ids) == len(set(ids))
    assert all(PHOTO_ID.match(i) for i in ids), [i for i in ids if not PHOTO_ID.match(i)][:5]


@pytest.mark.parametrize("name", ["keywords.tsv000", "collections.tsv000", "colors.tsv000"])
def test_child_rows_reference_known_photos(name: str, photo_ids: set[str]) -> None:
    unknown = {row["photo_id"] for row in read_dicts(name)} - photo_ids
    assert not unknown, f"{name}: unknown photo_ids {sorted(unknown)[:5]}"


def test_conversions_reference_known_photos(conversions: list[dict[str, str]], photo_ids: set[str]) -> None:
    unknown = {row["photo_id"] for row in conversions} - photo_ids
    assert not unknown, sorted(unknown)[:5]
    assert {row["conversion_type"] for row in conversions} == {"download"}


def test_images_exist_open_rgb_256(photos: list[dict[str, str]]) -> None:
    for photo in photos:
        relative = photo["photo_image_url"]
        assert relative == f"images/{photo['photo_id']}.jpg"
        path = SAMPLE / relative
        assert path.is_file(), relative
        with Image.open(path) as image:
            assert image.format == "JPEG", relative
            assert image.mode == "RGB", relative
            assert max(image.size) == 256, (relative, image.size)
            assert image.size == (int(photo["photo_width"]), int(photo["photo_height"])), relative


def test_no_stray_images(photo_ids: set[str]) -> None:
    on_disk = {p.stem for p in (SAMPLE / "images").iterdir()}
    assert on_disk == photo_ids


def test_readme_says_synthetic() -> None:
    text = (SAMPLE / "README.md").read_text(encoding="utf-8")
    assert "SYNTHETIC" in text
    assert "public domain" in text.lower()
    assert "scripts/build_sample.py" in text


def test_categories_are_balanced(photo_ids: set[str]) -> None:
    per_collection = Counter(row["collection_title"] for row in read_dicts("collections.tsv000"))
    assert sum(1 for n in per_collection.values() if n >= 10) >= 10, per_collection
    assert {row["photo_id"] for row in read_dicts("collections.tsv000")} == photo_ids


def test_some_photos_never_downloaded(conversions: list[dict[str, str]], photo_ids: set[str]) -> None:
    downloaded = {row["photo_id"] for row in conversions}
    never = photo_ids - downloaded
    assert len(never) >= 0.1 * len(photo_ids)
    assert downloaded, "no conversions at all"


def test_colors_are_fractions_and_hex_matches_rgb() -> None:
    for row in read_dicts("colors.tsv000"):
        assert re.fullmatch(r"[0-9a-f]{6}", row["hex"]), row
        assert row["hex"] == "{:02x}{:02x}{:02x}".format(int(row["red"]), int(row["green"]), int(row["blue"]))
        assert 0.0 < float(row["coverage"]) <= 1.0
        assert row["score"] == row["coverage"]


def test_folder_is_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 6_000_000, total
