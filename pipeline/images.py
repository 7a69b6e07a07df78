"""Getting images: thumbnail URLs, polite concurrent fetching with a disk cache, safe decoding.

Fetching retries what can succeed later (timeouts, connection resets, 5xx, 429) with
exponential backoff and never retries what cannot (404 and other 4xx, redirect loops). Every
fetched body is cached under `<data-dir>/images/` keyed by URL, so no image is downloaded
twice, across runs and crashes. Decoding refuses decompression bombs before allocating them,
uses JPEG draft mode to decode only at the size the model needs, and turns CMYK, grayscale,
palette and alpha images into plain RGB on white.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import requests
from PIL import Image, ImageFile, UnidentifiedImageError
from requests.adapters import HTTPAdapter

from .fsutil import atomic_write_bytes

THUMBNAIL_PARAMS = "q=75&fm=jpg&w=200&fit=max"
MAX_PIXELS = 80_000_000  # a 200 px thumbnail is 40k pixels; anything this large is hostile or a mistake
MAX_BYTES = 64 << 20
ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(Exception):
    """Why one image could not be used; `reason` is a short code counted in reports."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def thumbnail_url(photo_image_url: str) -> str:
    """The 200 px thumbnail the Unsplash image CDN serves for a photo URL."""
    if not photo_image_url.startswith(("http://", "https://")):
        return photo_image_url
    separator = "&" if "?" in photo_image_url else "?"
    return f"{photo_image_url}{separator}{THUMBNAIL_PARAMS}"


@dataclass
class Fetched:
    data: bytes
    sha256: str
    from_cache: bool


class ImageFetcher:
    """Fetches image bytes by URL or path, through the disk cache."""

    def __init__(self, cache_dir: Path, *, timeout: float = 20.0, retries: int = 3, pool_size: int = 16) -> None:
        self.cache_dir = cache_dir
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        self.session.max_redirects = 5
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "clipsql (+https://github.com/clipsql)"
        self.network_requests = 0

    def cache_path(self, url: str) -> Path:
        key = hashlib.sha1(url.encode("utf-8")).hexdigest()
        return self.cache_dir / key[:2] / key

    def cached(self, url: str) -> bytes | None:
        path = self.cache_path(url)
        return path.read_bytes() if path.exists() else None

    def evict(self, url: str) -> None:
        """Forget cached bytes that turned out unusable, so a retry fetches them again."""
        self.cache_path(url).unlink(missing_ok=True)

    def fetch(self, url: str) -> Fetched:
        if url.startswith("file://") or "://" not in url:
            path = Path(unquote(urlsplit(url).path)) if url.startswith("file://") else Path(url).expanduser()
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise ImageError("not_found", str(path)) from None
            except OSError as exc:
                raise ImageError("unreadable", f"{path}: {exc}") from None
            return Fetched(data, hashlib.sha256(data).hexdigest(), True)
        if not url.startswith(("http://", "https://")):
            raise ImageError("bad_url", url)
        cached = self.cached(url)
        if cached is not None:
            return Fetched(cached, hashlib.sha256(cached).hexdigest(), True)
        data = self._download(url)
        atomic_write_bytes(self.cache_path(url), data)
        return Fetched(data, hashlib.sha256(data).hexdigest(), False)

    def _download(self, url: str) -> bytes:
        last: ImageError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.25 * 2 ** (attempt - 1), 4.0))
            self.network_requests += 1
            try:
                with self.session.get(url, timeout=(min(self.timeout, 10.0), self.timeout), stream=True) as response:
                    status = response.status_code
                    if status == 429 or status >= 500:
                        last = ImageError(f"http_{status}", url)
                        continue
                    if status >= 400:
                        raise ImageError(f"http_{status}", url)
                    declared = response.headers.get("Content-Length", "")
                    length = int(declared) if declared.isdigit() else 0  # a malformed header is not our problem
                    if length > MAX_BYTES:
                        raise ImageError("too_large", f"{length} bytes")
                    chunks, size = [], 0
                    for chunk in response.iter_content(1 << 16):
                        size += len(chunk)
                        if size > MAX_BYTES:
                            raise ImageError("too_large", f"more than {MAX_BYTES} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except requests.TooManyRedirects:
                raise ImageError("redirect_loop", url) from None
            except requests.Timeout:
                last = ImageError("timeout", f"no answer within {self.timeout:g} s")
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as exc:  # dropped mid-body: worth another try
                last = ImageError("connection_error", str(exc)[:200])
            except requests.RequestException as exc:
                raise ImageError("request_error", str(exc)[:200]) from None
        assert last is not None
        raise last


def decode_image(data: bytes, target: int = 224) -> Image.Image:
    """Decode untrusted bytes into an RGB image at least `target` px on its shorter side if possible."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError("decompression_bomb", str(exc)[:200]) from None
    except UnidentifiedImageError:
        head = data[:64].lstrip().lower()
        kind = "HTML page" if head.startswith((b"<!doctype html", b"<html")) else f"{len(data)} bytes"
        raise ImageError("not_an_image", kind) from None
    except Exception as exc:  # a damaged header: PIL raises OSError, SyntaxError, struct.error...
        raise _damaged(exc) from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageError("decompression_bomb", f"{width}x{height} pixels")
    if width == 0 or height == 0:
        raise ImageError("decode_error", "zero-sized image")
    try:
        if image.format == "JPEG":
            image.draft("RGB", (target, target))
        image.load()
        return to_rgb(image)
    except Exception as exc:  # damaged image data, or a mode PIL cannot convert
        raise _damaged(exc) from None


def _damaged(exc: Exception) -> ImageError:
    text = str(exc).lower()
    reason = "truncated_image" if "truncated" in text or "broken data" in text else "decode_error"
    return ImageError(reason, str(exc)[:200])


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB on a white background, whatever the mode (CMYK, L, I;16, P, RGBA, LA)."""
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:  # palette or colour-key transparency
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image).astype(np.float64)
        top = 65535.0 if image.mode != "I" or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image
