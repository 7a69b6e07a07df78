"""Contact sheets: a search's key (image or text) and its results as one picture or one page.

`clipsql search ... --png grid.png` draws a grid with PIL; `--html out.html` writes a single
self-contained page whose images are embedded as data: URIs, so it can be mailed or opened
offline. Pictures come from where the pipeline keeps them: the embed stage's thumbnail cache
for http(s) photos (fetched into it only when missing) or the local file; a photo whose image
cannot be had gets a grey tile that says so instead of failing the command.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .db import Database
from .errors import UsageError
from .images import ImageError, ImageFetcher, decode_image, thumbnail_url
from .search import SearchResult

TILE = 200  # px: the thumbnails' size, like the Unsplash w=200 thumbnails the pipeline caches
CAPTION = 46  # px under each tile: rank and score, photo id
HEADER = 54
PAD = 12
KEY_COLOUR = (47, 111, 219)
TEXT_COLOUR = (29, 35, 48)
MUTED = (102, 112, 133)
BACKGROUND = (255, 255, 255)
PLACEHOLDER = (226, 229, 235)


@dataclass
class Tile:
    """One cell of the sheet: the key or a result."""

    title: str  # "key" or "#3"
    subtitle: str  # the score, or what the key is
    label: str  # photo id, file name or query text
    caption: str  # description
    image: Image.Image | None  # None: text key, or the image could not be had


def image_bytes(fetcher: ImageFetcher, url: str) -> bytes:
    """The cached bytes of a photo (its thumbnail first), else fetched once into the cache."""
    if url.startswith(("http://", "https://")):
        for candidate in (thumbnail_url(url), url):
            cached = fetcher.cached(candidate)
            if cached is not None:
                return cached
        return fetcher.fetch(thumbnail_url(url)).data
    return fetcher.fetch(url).data


def load_tile_image(fetcher: ImageFetcher, url: str | None) -> Image.Image | None:
    if not url:
        return None
    try:
        image = decode_image(image_bytes(fetcher, url), TILE)
    except ImageError:
        return None
    image.thumbnail((TILE, TILE), Image.LANCZOS)
    return image


def key_photo_url(db: Database, photo_id: str) -> str | None:
    rows = db.query_rows(db.sql("search/photo_details.sql").text, {"ids": [photo_id]})
    return rows[0][1] if rows else None


def build_tiles(fetcher: ImageFetcher, result: SearchResult, *, photo_id: str | None = None,
                photo_url: str | None = None, image: str | None = None, text: list[str] | None = None,
                minus: list[str] | None = None, metric: str = "cosine") -> list[Tile]:
    """The key's tile followed by one per result, nearest first."""
    if photo_id:
        key = Tile("key", "photo", photo_id, "", load_tile_image(fetcher, photo_url))
    elif image:
        key = Tile("key", "image", Path(image).name if "://" not in image else image, "", load_tile_image(fetcher, image))
    else:
        words = " + ".join(f'"{t}"' for t in text or []) + "".join(f' - "{m}"' for m in minus or [])
        key = Tile("key", "text", words, "", None)
    tiles = [key]
    for rank, row in enumerate(result.rows, start=1):
        tiles.append(Tile(f"#{rank}", f"{metric} {row['distance']:.4f}", row["photo_id"],
                          row.get("photo_description") or "", load_tile_image(fetcher, row.get("photo_image_url"))))
    return tiles


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int, lines: int) -> list[str]:
    words, out, line = text.split(), [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=font) <= width:
            line = candidate
            continue
        if line:
            out.append(line)
        line = word
        if len(out) == lines:
            break
    if line and len(out) < lines:
        out.append(line)
    if len(out) == lines and " ".join(out) != " ".join(words):
        out[-1] = _fit(draw, out[-1] + " …", font, width)
    return [_fit(draw, item, font, width) for item in out]


def tile_box(index: int, columns: int) -> tuple[int, int]:
    """Top-left corner of tile `index`'s picture area in the PNG (tests use it to find each tile)."""
    row, column = divmod(index, columns)
    return PAD + column * (TILE + PAD), HEADER + PAD + row * (TILE + CAPTION + PAD)


def render_png(tiles: list[Tile], title: str, path: Path, columns: int = 6) -> Path:
    if columns < 1:
        raise UsageError(f"columns must be at least 1, got {columns}")
    columns = min(columns, max(1, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    width = PAD + columns * (TILE + PAD)
    height = HEADER + PAD + rows * (TILE + CAPTION + PAD)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    big, small = _font(18), _font(13)
    draw.text((PAD, 16), _fit(draw, title, big, width - 2 * PAD), fill=TEXT_COLOUR, font=big)
    for index, tile in enumerate(tiles):
        x, y = tile_box(index, columns)
        if tile.image is not None:
            sheet.paste(tile.image, (x + (TILE - tile.image.width) // 2, y + (TILE - tile.image.height) // 2))
        else:
            draw.rectangle((x, y, x + TILE - 1, y + TILE - 1), fill=PLACEHOLDER)
            message = tile.label if tile.subtitle == "text" else "image unavailable"
            for n, line in enumerate(_wrap(draw, message, big if tile.subtitle == "text" else small, TILE - 20, 6)):
                draw.text((x + 10, y + 12 + n * 24), line, fill=TEXT_COLOUR, font=big if tile.subtitle == "text" else small)
        if tile.title == "key":
            draw.rectangle((x - 4, y - 4, x + TILE + 3, y + TILE + 3), outline=KEY_COLOUR, width=4)
        heading = f"{tile.title.upper() if tile.title == 'key' else tile.title}  {tile.subtitle}"
        draw.text((x, y + TILE + 6), _fit(draw, heading, small, TILE), fill=KEY_COLOUR if tile.title == "key" else
                  TEXT_COLOUR, font=small)
        draw.text((x, y + TILE + 24), _fit(draw, tile.label if tile.subtitle != "text" else "text query", small, TILE),
                  fill=MUTED, font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, "PNG", optimize=True)
    return path


def _data_uri(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def render_html(tiles: list[Tile], title: str, path: Path) -> Path:
    figures = []
    for tile in tiles:
        if tile.image is not None:
            picture = f'<img src="{_data_uri(tile.image)}" alt="{html.escape(tile.caption or tile.label)}">'
        elif tile.subtitle == "text":
            picture = f'<div class="text">{html.escape(tile.label)}</div>'
        else:
            picture = '<div class="missing">image unavailable</div>'
        classes = "key" if tile.title == "key" else "result"
        figures.append(
            f'<figure class="{classes}" data-label="{html.escape(tile.label)}">{picture}'
            f'<figcaption><b>{html.escape(tile.title)}</b> <span class="score">{html.escape(tile.subtitle)}</span>'
            f'<br><span class="id">{html.escape(tile.label)}</span>'
            + (f'<br><span class="caption">{html.escape(tile.caption)}</span>' if tile.caption else "")
            + "</figcaption></figure>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #f3f4f7; }}
h1 {{ font-size: 1.2rem; font-weight: 600; }}
.sheet {{ display: grid; grid-template-columns: repeat(auto-fill, minmax({TILE}px, 1fr)); gap: 14px; }}
figure {{ margin: 0; background: #fff; border: 1px solid #e3e6ec; border-radius: 8px; overflow: hidden; }}
figure.key {{ outline: 4px solid rgb{KEY_COLOUR}; }}
figure img, .text, .missing {{ width: 100%; height: {TILE}px; object-fit: contain; background: #e9ecf1; display: block; }}
.text, .missing {{ display: flex; align-items: center; justify-content: center; text-align: center; padding: 1rem;
  box-sizing: border-box; font-weight: 600; }}
figcaption {{ padding: .4rem .6rem .6rem; font-size: .85rem; }}
.id, .caption {{ color: #667085; overflow-wrap: anywhere; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<div class="sheet">
{chr(10).join(figures)}
</div></body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def sheet_title(result: SearchResult, *, photo_id: str | None, image: str | None, text: list[str] | None,
                metric: str, radius: float | None) -> str:
    what = f"photo {photo_id}" if photo_id else f"image {image}" if image else "text " + " + ".join(
        f'"{t}"' for t in text or [])
    predicate = f"within {metric} distance {radius:g}" if radius is not None else f"{len(result.rows)} nearest"
    return f"{predicate} to {what} · model {result.model.name}"


def write_contact_sheets(db: Database, fetcher: ImageFetcher, result: SearchResult, *, photo_id: str | None,
                         image: str | None, text: list[str] | None, minus: list[str] | None, metric: str,
                         radius: float | None, html_path: str | None = None, png_path: str | None = None) -> list[Path]:
    """Write the sheets asked for (`--html`, `--png`); returns their paths."""
    for name, value, suffix in (("--html", html_path, (".html", ".htm")), ("--png", png_path, (".png",))):
        if value and not value.lower().endswith(suffix):
            raise UsageError(f"{name} {value}: the file name must end with {' or '.join(suffix)}")
    photo_url = key_photo_url(db, photo_id) if photo_id else None
    tiles = build_tiles(fetcher, result, photo_id=photo_id, photo_url=photo_url, image=image, text=text, minus=minus,
                        metric=metric)
    title = sheet_title(result, photo_id=photo_id, image=image, text=text, metric=metric, radius=radius)
    written = []
    if html_path:
        written.append(render_html(tiles, title, Path(html_path)))
    if png_path:
        written.append(render_png(tiles, title, Path(png_path)))
    return written
