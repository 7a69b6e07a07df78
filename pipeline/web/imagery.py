"""Pictures for the web app: resized thumbnails with ETags, and the images people upload.

Photos are served from the embed stage's disk cache (or their local file), never by pointing
the browser at a remote URL; only a photo whose bytes are not cached yet is fetched, once,
into the same cache. Resizing costs a few milliseconds, so resized copies are kept in a small
in-memory LRU, and the ETag (a hash of the source bytes and the size) lets browsers skip even
that with a 304.

Uploads and pasted URLs become an `UploadedImage` keyed by the hash of their bytes: the
results page can then be re-run with other settings (another model, metric or k) without
sending the image again. The store keeps the most recent ones only; an expired id is a clear
404 asking to upload again.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..errors import NotFoundError, UsageError
from ..images import ImageError, decode_image

SIZES = {"small": 360, "large": 1024}
KEEP_PIXELS = 1024  # an upload is kept at most this large on its longer side (display and re-encoding)


class UnsupportedImage(UsageError):
    """Bytes that are not an image we can decode (HTTP 415)."""


class TooLarge(UsageError):
    """An upload over the size limit (HTTP 413)."""


def etag_for(data: bytes, size: str) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:20] + f"-{size}" + '"'


def resize_jpeg(image: Image.Image, longest: int, quality: int = 85) -> bytes:
    """A JPEG no larger than `longest` px on its longer side (never upscaled)."""
    copy = image.copy()
    copy.thumbnail((longest, longest), Image.LANCZOS)
    out = io.BytesIO()
    copy.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def decode_upload(data: bytes, what: str) -> Image.Image:
    """Decode untrusted bytes, or say in words why they are not a usable image."""
    if not data:
        raise UnsupportedImage(f"{what}: the file is empty")
    try:
        return decode_image(data, KEEP_PIXELS)
    except ImageError as exc:
        detail = f" ({exc.detail})" if exc.detail else ""
        raise UnsupportedImage(f"{what}: not a usable image: {exc.reason.replace('_', ' ')}{detail}") from None


class LruBytes:
    """A bounded map from key to bytes; thread-safe (FastAPI serves sync endpoints from a pool)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


@dataclass
class UploadedImage:
    upload_id: str
    image: Image.Image  # RGB, at most KEEP_PIXELS on its longer side
    source: str  # "upload: name.jpg" or the pasted URL
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # model name -> query vector
    thumbnails: dict[str, bytes] = field(default_factory=dict)  # size -> JPEG

    def thumbnail(self, size: str) -> bytes:
        if size not in self.thumbnails:
            self.thumbnails[size] = resize_jpeg(self.image, SIZES[size])
        return self.thumbnails[size]


class UploadStore:
    """The most recent uploads, by id (the first 16 hex digits of their bytes' sha256)."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, UploadedImage] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, data: bytes, source: str) -> UploadedImage:
        upload_id = hashlib.sha256(data).hexdigest()[:16]
        with self._lock:
            existing = self._items.get(upload_id)
            if existing is not None:
                self._items.move_to_end(upload_id)
                return existing
        image = decode_upload(data, source)
        image.thumbnail((KEEP_PIXELS, KEEP_PIXELS), Image.LANCZOS)
        item = UploadedImage(upload_id, image, source)
        with self._lock:
            self._items[upload_id] = item
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return item

    def get(self, upload_id: str) -> UploadedImage:
        with self._lock:
            item = self._items.get(upload_id)
            if item is None:
                raise NotFoundError(f"upload {upload_id!r} is not (or no longer) on this server; upload the image again")
            self._items.move_to_end(upload_id)
            return item
