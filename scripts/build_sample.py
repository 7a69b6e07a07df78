"""Build the offline sample dataset that `clipsql demo` runs on, in the Unsplash Lite layout.

    python scripts/build_sample.py [--src /usr/share/openclipart/png] [--out pipeline/sample]
                                   [--per-category 20] [--seed 7]

Source: the PNG clip art of the Debian package `openclipart-png` (openclipart.org, public domain).
The output is deterministic for a given source tree, seed and Pillow version.

What is REAL (derived from the clip art itself):
  * the images: each PNG rendered over a white background, longer side 256 px, JPEG quality 85;
  * photo_width / photo_height / photo_aspect_ratio: those of the saved JPEG;
  * photo_description and ai_description: a title taken from the file name, with the author name
    that openclipart appends to most file names removed (`lighthouse_matthew_gates_.png` -> "lighthouse");
  * keywords.keyword: the words of the file name and of its sub-folders, plus the category;
  * collections: one collection per openclipart category folder;
  * colors.tsv000: the five largest colours of a median-cut quantisation (8 colours) of the rendered
    image, the nearest CSS colour name, and coverage = fraction of pixels. There is no notion of
    focus here, so score = coverage.

What is SYNTHETIC (seeded random numbers, so that filters and joins have something to do):
  * photo_submitted_at, photo_featured, stats_views, stats_downloads;
  * the location (country, city, location name) of about 30% of the photos;
  * keywords.ai_service_1_confidence / ai_service_2_confidence / suggested_by_user;
  * collections.photo_collected_at, and the collection ids (stable hashes of the category name);
  * every row of conversions.tsv000 / conversions.tsv001 (Zipf-like popularity, made-up users).

Left empty on purpose: photo_url (there is no web page; nothing invented), photographer first and
last name, all exif_* fields, latitude/longitude, the ai_primary_landmark_* fields.
photo_image_url is the RELATIVE path `images/<photo_id>.jpg`; the pipeline resolves it against the
sample directory.

Which source files are used: regular files only (Debian deduplicates the package with symlinks, so a
symlink is a copy of an image in another folder), no two files with the same bytes, no two photos with
the same title within a category, and no tiny (< 100 px), huge (> 40 Mpx), unreadable, blank or very
thin images. Categories that are mostly not pictures, or carry no meaning, are left out (see
EXCLUDED_CATEGORIES), and so is any category with fewer usable images than --per-category, so that
every category holds the same number of photos.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import gzip
import hashlib
import math
import random
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------------
# The Unsplash Lite format (column order is part of the format).
# ---------------------------------------------------------------------------------------------

PHOTOS_COLUMNS: tuple[str, ...] = (
    "photo_id", "photo_url", "photo_image_url", "photo_submitted_at", "photo_featured",
    "photo_width", "photo_height", "photo_aspect_ratio", "photo_description",
    "photographer_username", "photographer_first_name", "photographer_last_name",
    "exif_camera_make", "exif_camera_model", "exif_iso", "exif_aperture_value",
    "exif_focal_length", "exif_exposure_time", "photo_location_name", "photo_location_latitude",
    "photo_location_longitude", "photo_location_country", "photo_location_city", "stats_views",
    "stats_downloads", "ai_description", "ai_primary_landmark_name", "ai_primary_landmark_latitude",
    "ai_primary_landmark_longitude", "ai_primary_landmark_confidence",
)  # fmt: skip
KEYWORDS_COLUMNS: tuple[str, ...] = (
    "photo_id", "keyword", "ai_service_1_confidence", "ai_service_2_confidence", "suggested_by_user",
)  # fmt: skip
COLLECTIONS_COLUMNS: tuple[str, ...] = ("photo_id", "collection_id", "collection_title", "photo_collected_at")
CONVERSIONS_COLUMNS: tuple[str, ...] = (
    "converted_at", "conversion_type", "keyword", "photo_id", "anonymous_user_id", "conversion_country",
)  # fmt: skip
COLORS_COLUMNS: tuple[str, ...] = ("photo_id", "hex", "red", "green", "blue", "keyword", "coverage", "score")

TSV_FILES: dict[str, tuple[str, ...]] = {
    "photos.tsv000": PHOTOS_COLUMNS,
    "keywords.tsv000": KEYWORDS_COLUMNS,
    "collections.tsv000": COLLECTIONS_COLUMNS,
    "conversions.tsv000": CONVERSIONS_COLUMNS,
    "conversions.tsv001": CONVERSIONS_COLUMNS,
    "colors.tsv000": COLORS_COLUMNS,
}

# ---------------------------------------------------------------------------------------------
# Selection and rendering.
# ---------------------------------------------------------------------------------------------

# Looked at by eye (contact sheets of random picks per folder) when this script was written.
EXCLUDED_CATEGORIES: dict[str, str] = {
    "buttons": "3 files, web buttons rather than pictures",
    "logos": "7 files, trademarks",
    "shapes": "1,600 files, nearly all generated star/circle line patterns",
    "special": "gradients and repeating fill patterns, not pictures",
    "unsorted": "real pictures, but 'unsorted' is no category a user would filter on",
}

TARGET_SIDE = 256  # longer side of every saved JPEG
JPEG_QUALITY = 85
MIN_SOURCE_SIDE = 100  # smaller sources (icons of 16-64 px) look like mush when scaled up
MAX_SOURCE_PIXELS = 40_000_000  # a few sources are 100-600 Mpx posters; not worth decoding
MIN_SHORT_SIDE = 48  # after resizing: thinner than this is a rule or a banner, not a picture
MIN_INK = 0.01  # fraction of pixels that must differ visibly from white

# ---------------------------------------------------------------------------------------------
# Titles and keywords from file names.
# ---------------------------------------------------------------------------------------------


def _wordset(text: str) -> frozenset[str]:
    """A set of whitespace-separated words (long word lists read better as a paragraph)."""
    return frozenset(text.split())


# openclipart file names are `<title>_<author first>_<author last>_<NN>.png`, cut at 24 characters
# before the counter. These are author names (full words) seen in the package; everything from the
# first of them on is dropped from the title.
AUTHOR_TOKENS: frozenset[str] = _wordset(
    """
    aj alcalde alex alejandro andreas andrea andy angelo anton anthony araujo architetto arjen ashton
    balin bazelkov benji benj bertle bogdan bosdon boitel boyer breuer brice brill buculei cedric celso
    cheng christoph chris clemente costea dan daniel dave dennis dietrich dirk dudziak eady enrique erich
    erik erwan fitzsimon francesco frederic frouke fudriot gabrielle ganson gates gerald gerhard gerhards
    gino guillaume guillou hussn jakob james jarno jasper jean jeff joel jon jonadab jonathan jorkon josu
    juliane jurgen kanitkar kilian kim krug kurt leif liekens linda lodahl luiz lumen marcelo martin
    mateya matt matthew mauro mccolm meijer michael mike mimooh mitchell montes moser nathan nicolas nicu
    nilsson nowick nurbldoff olivo omic patricia pena peterm petr petri philippe phillips rikva rollandin
    romus saurabh sergio shandy snuatautisticido soares staudt stefan steele struve susan tanguy todd
    tomek toh valessio valkhof vasamaa victor vladimir wolfram yager yogesh yves
    abiclipart ali astrid bouder darkon diaz einar eitel federico goneri graeber graig hart ingo jaime kessels
    kevin moore nae openclipart ralf raphael rick ryan sanchez santiago seban teudimu toullec tristan
    uliphant william
    """
)
# Words that say nothing about the picture.
STOP_WORDS: frozenset[str] = _wordset(
    """
    a an and are as at be by for from in into is it its of on or the to with without
    alt bis bwh new old png svg ver version
    con del della delle dei degli per una uno les des une pour avec sur
    """
)
# Dropped from titles too: `bw` (black-and-white variant), `alt` (alternative version).
TITLE_NOISE: frozenset[str] = frozenset({"bw", "alt"})
# Sub-folder names that are packaging, not content (icon themes and their mime-type folders).
NOISE_FOLDER_WORDS: frozenset[str] = _wordset(
    "theme icons apps actions applications devices filesystems mimetypes misc other"
)

# The fixed colour palette of colors.keyword: CSS colour keywords, as in the Unsplash docs.
CSS_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "silver": (192, 192, 192),
    "white": (255, 255, 255),
    "maroon": (128, 0, 0),
    "red": (255, 0, 0),
    "brown": (165, 42, 42),
    "orange": (255, 165, 0),
    "yellow": (255, 255, 0),
    "olive": (128, 128, 0),
    "lime": (0, 255, 0),
    "green": (0, 128, 0),
    "teal": (0, 128, 128),
    "aqua": (0, 255, 255),
    "navy": (0, 0, 128),
    "blue": (0, 0, 255),
    "purple": (128, 0, 128),
    "fuchsia": (255, 0, 255),
    "pink": (255, 192, 203),
}

# ---------------------------------------------------------------------------------------------
# Synthetic data parameters.
# ---------------------------------------------------------------------------------------------

SUBMITTED_FROM = dt.datetime(2018, 1, 1)
SUBMITTED_TO = dt.datetime(2022, 4, 30)
# Same one-year window as the conversions of Unsplash Lite 1.2.1.
CONVERSIONS_FROM = dt.datetime(2022, 5, 1)
CONVERSIONS_TO = dt.datetime(2023, 5, 1)
N_CONVERSIONS = 6000
N_USERS = 1200
ZERO_CONVERSION_SHARE = 0.15  # photos nobody downloads, on top of the ones Zipf leaves out
OWN_KEYWORD_SHARE = 0.8  # else the search keyword belongs to another photo
LOCATED_SHARE = 0.3
FEATURED_SHARE = 0.25
# (city, country): only names; coordinates stay empty.
LOCATIONS: tuple[tuple[str, str], ...] = (
    ("Paris", "France"),
    ("Berlin", "Germany"),
    ("Tokyo", "Japan"),
    ("New York", "United States"),
    ("San Francisco", "United States"),
    ("São Paulo", "Brazil"),
    ("Rome", "Italy"),
    ("Toronto", "Canada"),
    ("Sydney", "Australia"),
    ("Reykjavík", "Iceland"),
)
COUNTRY_CODES: dict[str, int] = {
    "US": 30,
    "IN": 10,
    "DE": 10,
    "GB": 10,
    "FR": 8,
    "JP": 8,
    "BR": 8,
    "CA": 6,
    "IT": 5,
    "AU": 5,
}

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


class SkipImage(Exception):
    """A source file that is not used; the message is the reason, counted in the summary."""


@dataclass
class Photo:
    """One selected source image and everything derived from it."""

    rel: Path  # relative to --src, e.g. animals/birds/seagull_01.png
    category: str
    photo_id: str
    description: str
    keywords: list[str]
    image: Image.Image
    colours: list[tuple[str, int, int, int, str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------------


def photo_id_for(rel: Path) -> str:
    """11 url-safe characters like a real Unsplash id, stable for a given source path."""
    digest = hashlib.sha1(rel.as_posix().encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest[:8]).decode("ascii").rstrip("=")


def collection_id_for(category: str) -> str:
    """A stable 6-digit id; the Unsplash schema declares collection_id an integer."""
    digest = hashlib.sha1(f"openclipart-collection:{category}".encode()).hexdigest()
    return str(100_000 + int(digest, 16) % 900_000)


def _tokens(text: str) -> list[str]:
    """Lower-case alphabetic runs; camelCase is split first (`MatieresCorrosives`)."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    return [t for t in re.split(r"[^a-z]+", text.lower()) if t]


def title_words(stem: str) -> list[str]:
    """The words of a file name that describe the picture (author names and counters removed)."""
    base = re.sub(r"_(\d+[a-z]?|[a-z])?$", "", stem)  # drop the `_01`, `_01r`, `_` counter
    truncated = len(base) >= 23  # openclipart cut the name; the last word may be half an author name
    words: list[str] = []
    for i, token in enumerate(_tokens(base)):
        if i > 0 and token in AUTHOR_TOKENS:
            break
        words.append(token)
    if truncated and len(words) > 1 and len(words[-1]) >= 2:
        last = words[-1]
        if any(author.startswith(last) and author != last for author in AUTHOR_TOKENS) or last in {
            "archi", "archit", "archite", "architet", "architett", "franc", "frances", "francesc",
        }:  # fmt: skip
            words.pop()
    return [w for w in words if len(w) > 1 and w not in TITLE_NOISE]


def keyword_words(words: Iterable[str]) -> list[str]:
    """Distinct keywords, in order: at least 3 letters, not a stop word."""
    out: list[str] = []
    for w in words:
        if len(w) >= 3 and w not in STOP_WORDS and w not in out:
            out.append(w)
    return out


def category_keyword(category: str) -> str:
    """`signs_and_symbols` -> `signs and symbols`."""
    return category.replace("_", " ")


def render(path: Path) -> Image.Image:
    """The PNG over white, longer side TARGET_SIDE, RGB; raises SkipImage when unusable."""
    if path.stat().st_size < 1024:
        raise SkipImage("tiny file")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_SOURCE_PIXELS:
                raise SkipImage("huge (> 40 Mpx)")
            if max(width, height) < MIN_SOURCE_SIDE:
                raise SkipImage("tiny (< 100 px)")
            # P (with or without tRNS), LA, L, RGB all become straight RGBA here.
            rgba = im.convert("RGBA")
    except SkipImage:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding problem means "broken file"
        raise SkipImage("unreadable") from exc
    scale = TARGET_SIDE / max(width, height)
    size = (
        TARGET_SIDE if width >= height else max(1, round(width * scale)),
        TARGET_SIDE if height > width else max(1, round(height * scale)),
    )
    if min(size) < MIN_SHORT_SIDE:
        raise SkipImage("too thin")
    # Pillow resizes RGBA with premultiplied alpha, so transparent pixels do not bleed dark edges.
    small = rgba.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGBA", size, (255, 255, 255, 255))
    canvas.alpha_composite(small)
    rgb = canvas.convert("RGB")
    ink = float((np.asarray(rgb).min(axis=2) < 240).mean())
    if ink < MIN_INK:
        raise SkipImage("blank")
    return rgb


def nearest_css_colour(rgb: tuple[int, int, int]) -> str:
    """Name of the nearest CSS_COLOURS entry in plain RGB distance (ties: palette order)."""
    return min(
        CSS_COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(CSS_COLOURS[name], rgb, strict=True))
    )


def dominant_colours(image: Image.Image, top: int = 5) -> list[tuple[str, int, int, int, str, float]]:
    """(hex, r, g, b, css name, coverage) of the `top` largest colours of an 8-colour median cut."""
    quantised = image.quantize(colors=8, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = quantised.getpalette() or []
    counts: Counter[tuple[int, int, int]] = Counter()
    for count, index in quantised.getcolors(256) or []:
        counts[tuple(palette[3 * index : 3 * index + 3])] += count  # type: ignore[index]
    total = image.width * image.height
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [
        (f"{r:02x}{g:02x}{b:02x}", r, g, b, nearest_css_colour((r, g, b)), round(count / total, 4))
        for (r, g, b), count in ranked
    ]


def random_time(rng: random.Random, start: dt.datetime, end: dt.datetime) -> dt.datetime:
    """A whole second, uniform in [start, end)."""
    return start + dt.timedelta(seconds=rng.randrange(int((end - start).total_seconds())))


def fmt_time(value: dt.datetime) -> str:
    """`YYYY-MM-DD HH:MM:SS`."""
    return value.strftime(TIMESTAMP_FORMAT)


def confidence(rng: random.Random, empty_share: float) -> str:
    """A float in [50, 100] with two decimals, or empty."""
    return "" if rng.random() < empty_share else f"{rng.uniform(50, 100):.2f}"


def write_tsv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """Unsplash Lite dialect: tab, header row, minimal double-quote quoting, `\\n`, UTF-8."""
    n = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(
            handle, delimiter="\t", quotechar='"', quoting=csv.QUOTE_MINIMAL, lineterminator="\n"
        )
        writer.writerow(columns)
        for row in rows:
            if len(row) != len(columns):
                raise ValueError(f"{path.name}: row has {len(row)} values, header has {len(columns)}")
            writer.writerow(["" if v is None else v for v in row])
            n += 1
    return n


def debian_version() -> str:
    """The installed openclipart-png version, read from its Debian changelog (for the README)."""
    changelog = Path("/usr/share/doc/openclipart-png/changelog.Debian.gz")
    try:
        with gzip.open(changelog, "rt", encoding="utf-8") as handle:
            match = re.match(r"\S+ \(([^)]+)\)", handle.readline())
    except OSError:
        return "unknown version"
    return match.group(1) if match else "unknown version"


# ---------------------------------------------------------------------------------------------
# The build.
# ---------------------------------------------------------------------------------------------


def select(src: Path, per_category: int, seed: int, skipped: Counter[str]) -> list[Photo]:
    """Seeded pick of `per_category` usable images from each kept category, in path order."""
    categories = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.is_symlink())
    photos: list[Photo] = []
    seen_bytes: set[str] = set()
    for category in categories:
        if category in EXCLUDED_CATEGORIES:
            print(f"  skip category {category}: {EXCLUDED_CATEGORIES[category]}")
            continue
        files = sorted(
            (
                p.relative_to(src)
                for p in (src / category).rglob("*.png")
                if p.is_file() and not p.is_symlink()
            ),
            key=lambda p: p.as_posix(),
        )
        rng = random.Random(f"{seed}:select:{category}")  # str seeds are stable across runs
        rng.shuffle(files)
        chosen: list[Photo] = []
        titles: set[str] = set()
        for rel in files:
            if len(chosen) == per_category:
                break
            words = title_words(rel.stem)
            description = " ".join(words)
            if not keyword_words(words):
                skipped["no usable words in the file name"] += 1
                continue
            if description in titles:
                skipped["same title as a photo already picked"] += 1
                continue
            digest = hashlib.sha1((src / rel).read_bytes()).hexdigest()
            if digest in seen_bytes:
                skipped["same bytes as a photo already picked"] += 1
                continue
            try:
                image = render(src / rel)
            except SkipImage as exc:
                skipped[str(exc)] += 1
                continue
            folder_words = [
                w
                for part in rel.parts[1:-1]
                if not part.endswith("-theme")  # icon theme names (lemon-theme, etiquette-theme)
                for w in _tokens(part)
                if w not in NOISE_FOLDER_WORDS
            ]
            keywords = keyword_words([*words, *folder_words])
            cat_kw = category_keyword(category)
            if cat_kw not in keywords:
                keywords.append(cat_kw)
            seen_bytes.add(digest)
            titles.add(description)
            chosen.append(Photo(rel, category, photo_id_for(rel), description, keywords, image))
        if len(chosen) < per_category:
            print(f"  skip category {category}: only {len(chosen)} usable images (< {per_category})")
            continue
        chosen.sort(key=lambda p: p.rel.as_posix())
        photos.extend(chosen)
    ids = [p.photo_id for p in photos]
    if len(set(ids)) != len(ids):
        raise SystemExit("photo_id collision; change photo_id_for")
    return photos


def keyword_rows(photos: Sequence[Photo], seed: int) -> list[list[object]]:
    """One row per (photo, keyword); the confidences and the user flag are synthetic."""
    rng = random.Random(f"{seed}:keywords")
    rows: list[list[object]] = []
    for photo in photos:
        for keyword in photo.keywords:
            rows.append(
                [
                    photo.photo_id,
                    keyword,
                    confidence(rng, 0.25),
                    confidence(rng, 0.5),
                    "t" if rng.random() < 0.35 else "f",
                ]
            )
    return rows


def conversion_rows(photos: Sequence[Photo], seed: int) -> list[list[object]]:
    """Synthetic search downloads: Zipf-like photo popularity and users, some photos never downloaded."""
    rng = random.Random(f"{seed}:conversions")
    order = sorted(photos, key=lambda p: p.photo_id)
    n_zero = math.ceil(ZERO_CONVERSION_SHARE * len(order))
    zero = {p.photo_id for p in rng.sample(order, n_zero)}
    popular = [p for p in order if p.photo_id not in zero]
    rng.shuffle(popular)
    photo_weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(popular))]

    user_numbers = rng.sample(range(16**6), N_USERS)
    users = [f"synthetic-{n:06x}" for n in user_numbers]
    user_weights = [1.0 / (rank + 1) ** 0.8 for rank in range(N_USERS)]
    countries = list(COUNTRY_CODES)
    country_weights = list(COUNTRY_CODES.values())
    all_keywords = [(p.photo_id, k) for p in order for k in p.keywords]

    rows: list[list[object]] = []
    for photo in rng.choices(popular, photo_weights, k=N_CONVERSIONS):
        if rng.random() < OWN_KEYWORD_SHARE:
            keyword = rng.choice(photo.keywords)
        else:  # a search for something else that still ended on this photo
            while True:
                owner, keyword = rng.choice(all_keywords)
                if owner != photo.photo_id and keyword not in photo.keywords:
                    break
        rows.append(
            [
                fmt_time(random_time(rng, CONVERSIONS_FROM, CONVERSIONS_TO)),
                "download",
                keyword,
                photo.photo_id,
                rng.choices(users, user_weights)[0],
                rng.choices(countries, country_weights)[0],
            ]
        )
    rows.sort(key=lambda r: (r[0], r[3], r[4]))
    return rows


def photo_rows(
    photos: Sequence[Photo], sizes: dict[str, tuple[int, int]], conversions: Counter[str], seed: int
) -> tuple[list[list[object]], dict[str, dt.datetime]]:
    """photos.tsv000 rows, and each photo's synthetic submission time (for the collections)."""
    rng = random.Random(f"{seed}:photos")
    rows: list[list[object]] = []
    submitted: dict[str, dt.datetime] = {}
    for photo in photos:
        width, height = sizes[photo.photo_id]
        when = random_time(rng, SUBMITTED_FROM, SUBMITTED_TO)
        submitted[photo.photo_id] = when
        featured = "t" if rng.random() < FEATURED_SHARE else "f"
        city = country = location_name = ""
        if rng.random() < LOCATED_SHARE:
            city, country = rng.choice(LOCATIONS)
            location_name = f"{city}, {country}"
        downloads = conversions[photo.photo_id] * rng.randint(3, 12) + rng.randint(0, 40)
        views = downloads * rng.randint(15, 120) + rng.randint(100, 5000)
        rows.append(
            [
                photo.photo_id, "", f"images/{photo.photo_id}.jpg", fmt_time(when), featured,
                width, height, f"{width / height:.2f}", photo.description,
                "openclipart", "", "",
                "", "", "", "", "", "",
                location_name, "", "", country, city,
                views, downloads,
                photo.description, "", "", "", "",
            ]
        )  # fmt: skip
    return rows, submitted


def collection_rows(
    photos: Sequence[Photo], submitted: dict[str, dt.datetime], seed: int
) -> list[list[object]]:
    """Each photo in the collection of its category, collected some time after submission."""
    rng = random.Random(f"{seed}:collections")
    ids = {p.category: collection_id_for(p.category) for p in photos}
    if len(set(ids.values())) != len(ids):
        raise SystemExit("collection_id collision; change collection_id_for")
    rows: list[list[object]] = []
    for photo in photos:
        start = submitted[photo.photo_id] + dt.timedelta(hours=1)
        end = min(start + dt.timedelta(days=365), CONVERSIONS_FROM)
        rows.append(
            [
                photo.photo_id,
                ids[photo.category],
                category_keyword(photo.category).title(),
                fmt_time(random_time(rng, start, end)),
            ]
        )
    return rows


def readme_text(photos: Sequence[Photo], counts: dict[str, int], args: argparse.Namespace) -> str:
    """The sample's README: provenance, license, what is real and what is synthetic."""
    per_category = Counter(p.category for p in photos)
    category_lines = "\n".join(
        f"| {c} | {category_keyword(c).title()} | {collection_id_for(c)} | {n} |"
        for c, n in sorted(per_category.items())
    )
    excluded_lines = "\n".join(f"- `{c}`: {why}" for c, why in EXCLUDED_CATEGORIES.items())
    file_lines = "\n".join(f"| `{name}` | {n} |" for name, n in counts.items())
    return f"""# clipsql offline sample

A small dataset in the layout of the [Unsplash Lite dataset](https://github.com/unsplash/datasets)
(same TSV file names, columns and dialect) that `clipsql demo` runs on without any network.
It is **not** Unsplash data: the pictures are clip art from [openclipart.org](https://openclipart.org),
as shipped by the Debian package `openclipart-png` ({debian_version()}).

## License

The images are openclipart.org clip art, dedicated to the **public domain** by their authors (Creative
Commons Public Domain Dedication; see `/usr/share/doc/openclipart-png/copyright` on Debian). The
synthetic data below was generated by `scripts/build_sample.py` and is public domain too.

## Contents

{len(photos)} images in `images/<photo_id>.jpg` (JPEG quality {JPEG_QUALITY}, longer side {TARGET_SIDE} px,
transparent clip art rendered over white), from {len(per_category)} openclipart categories:

| openclipart folder | collection_title | collection_id | photos |
|---|---|---|---|
{category_lines}

Left out of the sample:

{excluded_lines}

| file | rows (header not counted) |
|---|---|
{file_lines}

## What is real and what is SYNTHETIC

Real, derived from the clip art:

- the images, and `photo_width`, `photo_height`, `photo_aspect_ratio` (of the JPEG as saved);
- `photo_description` / `ai_description`: a title made from the file name, with the author name
  that openclipart appends to file names removed (some titles are Italian or French, as the file names are);
- `keywords.keyword`: the words of the file name and of its sub-folders, plus the category name;
- `collections`: one collection per openclipart category folder;
- `colors.tsv000`: the 5 largest colours of an 8-colour median-cut quantisation of the rendered image;
  `keyword` is the nearest CSS colour name; `coverage` is the **fraction** of pixels (0-1, the real
  dataset gives a percentage); `score` = `coverage`, as clip art has no notion of focus.

**SYNTHETIC** (seeded random numbers, seed {args.seed}; they only exist so that filters, joins and
rankings have something to work on, and mean nothing):

- `photo_submitted_at`, `photo_featured`, `stats_views`, `stats_downloads`;
- `photo_location_name`, `photo_location_country`, `photo_location_city` (about 30% of the photos);
- `keywords.ai_service_1_confidence`, `ai_service_2_confidence`, `suggested_by_user`;
- `collections.collection_id` (a hash of the category name) and `photo_collected_at`;
- **all of `conversions.tsv000` and `conversions.tsv001`**: {N_CONVERSIONS} made-up downloads between
  {CONVERSIONS_FROM:%Y-%m-%d} and {CONVERSIONS_TO:%Y-%m-%d}, Zipf-like popularity (some photos have none),
  users named `synthetic-xxxxxx`, 80% of the search keywords belong to the downloaded photo.

Empty on purpose: `photo_url` (there is no web page), photographer first/last name (the username is
`openclipart`), all `exif_*` columns, latitude/longitude, all `ai_primary_landmark_*` columns.
`photo_image_url` is the **relative** path `images/<photo_id>.jpg`, resolved against this directory.
Unlike Unsplash Lite 1.2+, `photos.tsv000` has no `blur_hash` column.

## Rebuild

On Debian/Ubuntu with `openclipart-png` installed, from the repository root:

    python scripts/build_sample.py --src {args.src} --out pipeline/sample --per-category {args.per_category} --seed {args.seed}

The output is deterministic for a given package version, seed and Pillow version.
"""


def clean(out: Path) -> None:
    """Remove what a previous run wrote (only our own file names), so stale images never linger."""
    images = out / "images"
    if images.is_dir():
        shutil.rmtree(images)
    for name in [*TSV_FILES, "README.md"]:
        (out / name).unlink(missing_ok=True)


def dir_size(path: Path) -> int:
    """Bytes of all files below `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line; defaults build the sample that ships in pipeline/sample."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src", type=Path, default=Path("/usr/share/openclipart/png"), help="openclipart PNG root"
    )
    parser.add_argument("--out", type=Path, default=Path("pipeline/sample"), help="output directory")
    parser.add_argument("--per-category", type=int, default=20, help="photos per category")
    parser.add_argument("--seed", type=int, default=7, help="seed of every random choice")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the sample and print a summary."""
    args = parse_args(argv)
    if not args.src.is_dir():
        print(f"error: {args.src} not found; install the Debian package openclipart-png", file=sys.stderr)
        return 2
    Image.MAX_IMAGE_PIXELS = None  # sizes are checked in render() before anything is decoded

    print(f"selecting from {args.src} (seed {args.seed}, {args.per_category} per category)")
    skipped: Counter[str] = Counter()
    photos = select(args.src, args.per_category, args.seed, skipped)
    if not photos:
        print("error: no usable images", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    clean(args.out)
    (args.out / "images").mkdir()
    sizes: dict[str, tuple[int, int]] = {}
    for photo in photos:
        photo.image.save(
            args.out / "images" / f"{photo.photo_id}.jpg", "JPEG", quality=JPEG_QUALITY, optimize=True
        )
        sizes[photo.photo_id] = photo.image.size
        photo.colours = dominant_colours(photo.image)

    keywords = keyword_rows(photos, args.seed)
    conversions = conversion_rows(photos, args.seed)
    per_photo = Counter(str(row[3]) for row in conversions)
    photos_table, submitted = photo_rows(photos, sizes, per_photo, args.seed)
    colours = [[p.photo_id, *c, c[-1]] for p in photos for c in p.colours]
    half = len(conversions) // 2

    counts = {
        "photos.tsv000": write_tsv(args.out / "photos.tsv000", PHOTOS_COLUMNS, photos_table),
        "keywords.tsv000": write_tsv(args.out / "keywords.tsv000", KEYWORDS_COLUMNS, keywords),
        "collections.tsv000": write_tsv(
            args.out / "collections.tsv000",
            COLLECTIONS_COLUMNS,
            collection_rows(photos, submitted, args.seed),
        ),
        "conversions.tsv000": write_tsv(
            args.out / "conversions.tsv000", CONVERSIONS_COLUMNS, conversions[:half]
        ),
        "conversions.tsv001": write_tsv(
            args.out / "conversions.tsv001", CONVERSIONS_COLUMNS, conversions[half:]
        ),
        "colors.tsv000": write_tsv(args.out / "colors.tsv000", COLORS_COLUMNS, colours),
    }
    (args.out / "README.md").write_text(readme_text(photos, counts, args), encoding="utf-8")

    print("skipped source files:")
    for reason, n in sorted(skipped.items()):
        print(f"  {n:5d}  {reason}")
    print("photos per category:")
    for category, n in sorted(Counter(p.category for p in photos).items()):
        print(f"  {n:5d}  {category}")
    zero = sum(1 for p in photos if per_photo[p.photo_id] == 0)
    print(f"photos without conversions: {zero} of {len(photos)}")
    print(f"wrote {args.out}:")
    print(f"  {len(photos):6d} images  ({dir_size(args.out / 'images') / 1e6:.2f} MB)")
    for name, n in counts.items():
        print(f"  {n:6d} rows    {name}  ({(args.out / name).stat().st_size / 1e3:.0f} kB)")
    print(f"  total {dir_size(args.out) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
