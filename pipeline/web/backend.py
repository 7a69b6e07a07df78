"""Everything the web pages and the JSON API ask of clipsql, in one object per server.

The server opens the database once for its lifetime: chDB allows one process per database
directory and one open chDB path per process, and opening costs far more than a query. FastAPI
runs sync endpoints in a thread pool, so database access is serialised with a lock; against a
ClickHouse server (an http(s) DSN) several server processes can run side by side. Encoders
load slowly (seconds), so each model's is loaded once, on the first query that needs it, and
kept. Searching is the library's (`pipeline.search`); this module only turns web input into
its calls and its results into what pages show.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..db import Database, open_client
from ..encoders import Encoder, load_encoder
from ..errors import NotFoundError, UsageError
from ..images import ImageError, ImageFetcher, decode_image, thumbnail_url
from ..queries import run_query
from ..search import LoadedModel, loaded_models, nearest, photo_vector, resolve_model, text_vector
from ..sqlfile import SqlFile, fill_template, parse_sql_file
from .imagery import SIZES, LruBytes, UploadedImage, UploadStore, etag_for, resize_jpeg
from .params import MAX_RANGE_ROWS, SearchSettings, clean_texts, parse_set

SQL_DIR = Path(__file__).resolve().parent / "sql"
MAX_GALLERY_PAGE = 100
CATALOGUE_TTL = 60.0  # seconds the loaded models, set menus and image locations are reused before asking again
TEXT_MODEL_ENCODERS = ("clip",)  # encoder kinds that embed text as well as images


def web_sql(name: str) -> SqlFile:
    return parse_sql_file(SQL_DIR / f"{name}.sql")


@dataclass
class Key:
    """What a search is about, as the results page shows it."""

    kind: str  # photo | text | upload | url
    photo_id: str = ""
    text: list[str] = field(default_factory=list)
    minus: list[str] = field(default_factory=list)
    upload_id: str = ""
    image_url: str = ""
    description: str = ""

    @property
    def label(self) -> str:
        if self.kind == "photo":
            return self.photo_id
        if self.kind == "text":
            words = " + ".join(f"“{t}”" for t in self.text)
            return words + "".join(f" − “{m}”" for m in self.minus)
        return self.image_url if self.kind == "url" else "uploaded image"

    @property
    def image_path(self) -> str | None:
        """The server path of the key's picture, or None for a text query."""
        if self.kind == "photo":
            return f"/thumbs/{self.photo_id}"
        if self.kind in ("upload", "url"):
            return f"/uploads/{self.upload_id}"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "photo_id": self.photo_id or None, "text": self.text, "minus": self.minus,
                "upload_id": self.upload_id or None, "image_url": self.image_url or None, "label": self.label,
                "description": self.description, "image": self.image_path}


@dataclass
class SearchView:
    key: Key
    settings: SearchSettings
    model: LoadedModel
    rows: list[dict[str, Any]]
    total: int  # rows found before the range cap
    plan: str
    warnings: list[str]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key.as_dict(), "model": self.model.name, "metric": self.settings.metric,
            "predicate": self.settings.predicate, "k": self.settings.k,
            "radius": self.settings.radius if self.settings.predicate == "range" else None,
            "join_set": self.settings.join_set, "plan": self.plan, "warnings": self.warnings,
            "seconds": self.seconds, "total": self.total, "results": self.rows,
        }


class WebBackend:
    """The database, encoders, uploads and thumbnails one `clipsql serve` process works with."""

    def __init__(self, settings: Settings, db: Database, default_model: str | None = None) -> None:
        self.settings = settings
        self.db = db
        self._db_lock = threading.RLock()
        self._encoders: dict[str, Encoder] = {}
        self._encoder_lock = threading.Lock()
        self.uploads = UploadStore()
        self.thumbs = LruBytes(1024)
        self._cached: dict[tuple, tuple[float, Any]] = {}
        self.fetcher = ImageFetcher(settings.paths().images, timeout=settings.http_timeout,
                                    retries=settings.http_retries)
        self.default_model: str | None = None
        self.default_model = self.resolve(default_model).name if default_model else None

    @classmethod
    def open(cls, settings: Settings, default_model: str | None = None) -> WebBackend:
        """Open the configured database for the server's lifetime (a locked chDB path fails here, clearly)."""
        dsn = settings.database_dsn
        db = Database(open_client(dsn), dsn)
        try:
            return cls(settings, db, default_model)
        except Exception:
            db.close()
            raise

    def close(self) -> None:
        with self._db_lock:
            self.db.close()

    @contextmanager
    def database(self) -> Iterator[Database]:
        with self._db_lock:
            yield self.db

    # -- models and sets ----------------------------------------------------------------------------
    def _catalogue(self, key: tuple, compute: Any) -> Any:
        """What changes only when data is loaded (models, set menus, image URLs), reused for CATALOGUE_TTL:
        each answer costs a few engine round trips that every request would otherwise repeat."""
        hit = self._cached.get(key)
        if hit is not None and time.monotonic() - hit[0] < CATALOGUE_TTL:
            return hit[1]
        value = compute()
        if len(self._cached) > 10_000:
            self._cached.clear()
        self._cached[key] = (time.monotonic(), value)
        return value

    def models(self) -> list[dict[str, Any]]:
        return self._catalogue(("models",), self._models)

    def _models(self) -> list[dict[str, Any]]:
        with self.database() as db:
            models = loaded_models(db)
            counts = {m.name: db.count(m.table) for m in models}
        default = self.resolve(None).name if models else None
        return [{"name": m.name, "dim": m.dim, "encoder": m.encoder, "vectors": counts[m.name],
                 "text": m.encoder in TEXT_MODEL_ENCODERS, "default": m.name == default} for m in models]

    def resolve(self, name: str | None) -> LoadedModel:
        return self._catalogue(("resolve", name or self.default_model), lambda: self._resolve(name))

    def _resolve(self, name: str | None) -> LoadedModel:
        with self.database() as db:
            try:
                return resolve_model(db, self.settings, name or self.default_model)
            except UsageError:
                if name:
                    raise
                return loaded_models(db)[0]  # several loaded and none chosen: the first, like the menu shows

    def set_choices(self, per_kind: int = 15) -> list[dict[str, Any]]:
        return self._catalogue(("sets", per_kind), lambda: self._set_choices(per_kind))

    def _set_choices(self, per_kind: int) -> list[dict[str, Any]]:
        with self.database() as db:
            rows = db.query_arrow(web_sql("set_choices").text, {"n": per_kind}).to_pylist()
            total = db.count("photos") if db.table_exists("photos") else 0
        choices = [{"kind": "all", "value": "all", "label": "All photos", "photos": total}]
        for row in rows:
            choices.append({"kind": row["kind"], "value": f"{row['kind']}:{row['value']}",
                            "label": row["label"] or row["value"], "photos": int(row["photos"])})
        return choices

    # -- gallery --------------------------------------------------------------------------------------
    def gallery(self, *, key_set: list[str], model: str | None, text: str = "", page: int = 1,
                per_page: int = 24, seed: int = 0) -> dict[str, Any]:
        if not 1 <= per_page <= MAX_GALLERY_PAGE:
            raise UsageError(f"per_page must be between 1 and {MAX_GALLERY_PAGE}, got {per_page}")
        if page < 1:
            raise UsageError(f"page must be at least 1, got {page}")
        if not 0 <= seed < 2**63:
            raise UsageError(f"seed must be between 0 and 2^63-1, got {seed}")
        if len(text) > 100:
            raise UsageError(f"the gallery filter may have at most 100 characters, got {len(text)}")
        selection = parse_set("key set", key_set)
        loaded = self.resolve(model)
        where, params = selection.condition("g")
        sql = fill_template(web_sql("gallery_page").statements()[0], {"filter": where})
        with self.database() as db:
            rows = db.query_arrow(sql, {"table": loaded.table, "text": text.strip(), "seed": seed, "limit": per_page,
                                        "offset": (page - 1) * per_page, **params}).to_pylist()
            total = int(rows[0]["total"]) if rows else (self._gallery_total(db, sql, loaded, text, params)
                                                         if page > 1 else 0)
        photos = [{"photo_id": r["photo_id"], "description": r["photo_description"],
                   "photographer": r["photographer_username"], "thumb": f"/thumbs/{r['photo_id']}"} for r in rows]
        pages = max(1, -(-total // per_page))
        return {"model": loaded.name, "key_set": key_set, "text": text, "page": page, "per_page": per_page,
                "pages": pages, "total": total, "seed": seed, "photos": photos}

    def _gallery_total(self, db: Database, sql: str, loaded: LoadedModel, text: str, params: dict[str, Any]) -> int:
        """A page past the end has no row to carry the total; ask for the first row instead."""
        rows = db.query_arrow(sql, {"table": loaded.table, "text": text.strip(), "seed": 0, "limit": 1, "offset": 0,
                                    **params}).to_pylist()
        return int(rows[0]["total"]) if rows else 0

    # -- search ---------------------------------------------------------------------------------------
    def encoder(self, model: LoadedModel) -> Encoder:
        with self._encoder_lock:
            if model.name not in self._encoders:
                self._encoders[model.name] = load_encoder(model.name, self.settings.device)
            return self._encoders[model.name]

    def key_from(self, *, photo_id: str = "", text: list[str] | None = None, minus: list[str] | None = None,
                 upload: str = "", image_url: str = "") -> Key:
        """Exactly one of photo id, texts, upload id or image URL; say which is missing or extra."""
        texts, minus_texts = clean_texts("text", text), clean_texts("minus", minus)
        photo_id, upload, image_url = photo_id.strip(), upload.strip(), image_url.strip()
        given = [name for name, value in (("photo_id", photo_id), ("text", texts), ("upload", upload),
                                          ("image_url", image_url)) if value]
        if len(given) != 1:
            raise UsageError("give exactly one key: photo_id, text, upload or image_url" +
                             (f" (got {', '.join(given)})" if given else ""))
        if minus_texts and not texts:
            raise UsageError("minus subtracts texts from a text query; give text too")
        if photo_id:
            return Key("photo", photo_id=photo_id)
        if texts:
            return Key("text", text=texts, minus=minus_texts)
        if upload:
            self.uploads.get(upload)  # a clear 404 if it expired
            return Key("upload", upload_id=upload)
        return Key("url", image_url=image_url, upload_id=self.fetch_image_url(image_url).upload_id)

    def fetch_image_url(self, url: str) -> UploadedImage:
        """A pasted image URL, fetched through the image cache (so a second search costs no download)."""
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"image_url {url!r}: give an http(s) URL (to search with a file, upload it)")
        if len(url) > 2000:
            raise UsageError("image_url: at most 2000 characters")
        try:
            fetched = self.fetcher.fetch(url)
        except ImageError as exc:
            raise UsageError(f"image_url {url}: cannot fetch it: {exc.reason.replace('_', ' ')}"
                             + (f" ({exc.detail})" if exc.detail and exc.detail != url else "")) from None
        try:
            return self.uploads.add(fetched.data, url)
        except UsageError:
            self.fetcher.evict(url)
            raise

    def add_upload(self, data: bytes, filename: str) -> UploadedImage:
        return self.uploads.add(data, f"upload {filename}" if filename else "upload")

    def _upload_vector(self, item: UploadedImage, model: LoadedModel) -> np.ndarray:
        if model.name not in item.vectors:
            item.vectors[model.name] = self.encoder(model).embed([item.image])[0]
        return item.vectors[model.name]

    def search(self, key: Key, settings: SearchSettings) -> SearchView:
        options = settings.options()
        model = self.resolve(settings.model or None)
        started = time.perf_counter()
        if key.kind == "photo":
            with self.database() as db:
                vector = photo_vector(db, model, key.photo_id)
            options.exclude = key.photo_id
        elif key.kind == "text":
            vector = text_vector(self.encoder(model), key.text, key.minus)
        else:
            vector = self._upload_vector(self.uploads.get(key.upload_id), model)
        with self.database() as db:
            result = nearest(db, model, vector, options)
            if key.kind == "photo":
                info = db.query_rows("SELECT photo_description FROM photos WHERE photo_id = {p:String}",
                                     {"p": key.photo_id})
                key.description = info[0][0] if info else ""
        rows = result.rows
        total = len(rows)
        warnings = list(result.warnings)
        if settings.predicate == "range" and total > MAX_RANGE_ROWS:
            rows = rows[:MAX_RANGE_ROWS]
            warnings.append(f"{total} photos lie within the radius; showing the nearest {MAX_RANGE_ROWS}")
        shown = [{"rank": i + 1, "photo_id": r["photo_id"], "distance": float(r["distance"]),
                  "description": r.get("photo_description") or "", "photographer": r.get("photographer_username") or "",
                  "thumb": f"/thumbs/{r['photo_id']}"} for i, r in enumerate(rows)]
        return SearchView(key, settings, model, shown, total, result.plan, warnings,
                          round(time.perf_counter() - started, 4))

    # -- photos and analytics -------------------------------------------------------------------------
    def photo_info(self, photo_id: str) -> dict[str, Any]:
        with self.database() as db:
            rows = db.query_arrow(web_sql("photo_info").text, {"photo_id": photo_id}).to_pylist()
        if not rows:
            raise NotFoundError(f"photo id {photo_id!r} is not in the photos table")
        row = rows[0]
        name = " ".join(p for p in (row.pop("photographer_first_name"), row.pop("photographer_last_name")) if p)
        row["photographer_name"] = name
        row["downloads"] = int(row["downloads"])
        row["thumb"] = f"/thumbs/{photo_id}"
        row["large"] = f"/thumbs/{photo_id}?size=large"
        row.pop("photo_image_url")
        return row

    def analytics(self, ids: list[str], n: int = 5) -> dict[str, Any]:
        """The tutorial's analytics for any result list: downloads per result, then the top download
        keywords of the most downloaded one (ties: the one ranked first)."""
        if len(ids) > 1000:
            raise UsageError(f"ids: at most 1000 photo ids, got {len(ids)}")
        if not 1 <= n <= 50:
            raise UsageError(f"n must be between 1 and 50, got {n}")
        ids = [i for i in ids if i]
        with self.database() as db:
            downloads = run_query(db, self.settings, "downloads_of_photos", {"ids": ids}).to_pylist() if ids else []
            best = None
            for row in downloads:
                if row["downloads"] and (best is None or row["downloads"] > best["downloads"]):
                    best = row
            keywords = (run_query(db, self.settings, "top_download_keywords",
                                  {"photo_id": best["photo_id"], "n": n}).to_pylist() if best else [])
        return {"downloads": [{"photo_id": r["photo_id"], "downloads": int(r["downloads"])} for r in downloads],
                "most_downloaded": best["photo_id"] if best else None,
                "most_downloaded_downloads": int(best["downloads"]) if best else 0,
                "keywords": [{"keyword": r["keyword"], "downloads": int(r["downloads"])} for r in keywords]}

    # -- pictures -------------------------------------------------------------------------------------
    def photo_image_bytes(self, photo_id: str) -> bytes:
        """The best local bytes for a photo: the embed stage's cached thumbnail, the full image if that
        is cached instead, a local file; fetched into the cache only when none is there."""
        url = self._catalogue(("image_url", photo_id), lambda: self._image_url(photo_id))
        if url.startswith(("http://", "https://")):
            for candidate in (thumbnail_url(url), url):
                cached = self.fetcher.cached(candidate)
                if cached is not None:
                    return cached
            target = thumbnail_url(url)
        else:
            target = url
        try:
            return self.fetcher.fetch(target).data
        except ImageError as exc:
            raise NotFoundError(f"the image of photo {photo_id} is not available: {exc.reason.replace('_', ' ')}") from None

    def _image_url(self, photo_id: str) -> str:
        with self.database() as db:
            rows = db.query_rows(web_sql("image_url").text, {"photo_id": photo_id})
        if not rows:
            raise NotFoundError(f"photo id {photo_id!r} is not in the photos table")
        return rows[0][0]

    def thumbnail(self, photo_id: str, size: str, if_none_match: str | None = None) -> tuple[bytes | None, str]:
        """(JPEG bytes, ETag); the bytes are None when the browser's copy (If-None-Match) is current."""
        if size not in SIZES:
            raise UsageError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
        source = self.photo_image_bytes(photo_id)
        etag = etag_for(source, size)
        if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
            return None, etag
        cached = self.thumbs.get(etag)
        if cached is not None:
            return cached, etag
        try:
            image = decode_image(source, SIZES[size])
        except ImageError as exc:
            raise NotFoundError(f"the image of photo {photo_id} cannot be decoded: {exc.reason.replace('_', ' ')}") from None
        data = resize_jpeg(image, SIZES[size])
        self.thumbs.put(etag, data)
        return data, etag

    def upload_thumbnail(self, upload_id: str, size: str) -> tuple[bytes, str]:
        if size not in SIZES:
            raise UsageError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
        data = self.uploads.get(upload_id).thumbnail(size)
        return data, f'"{upload_id}-{size}"'
