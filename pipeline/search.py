"""Nearest-neighbour search by photo id, image (file or URL) or text.

A query becomes one vector, bound as `{q:Array(Float32)}` (an untyped literal would be read as
Float64 and slow the scan), and one SQL statement from `sql/search/knn.sql` answers it through
the model's HNSW index, joined with the photo details.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import Settings
from .db import Database
from .encoders import Encoder, load_encoder
from .errors import NotFoundError, UsageError
from .images import ImageError, ImageFetcher, decode_image
from .state import read_state
from .store import canonical_model_name


@dataclass
class LoadedModel:
    name: str
    table: str
    dim: int
    encoder: str


def loaded_models(db: Database) -> list[LoadedModel]:
    if not db.table_exists("models"):
        return []
    rows = db.query_rows("SELECT model, table_name, dim, encoder FROM models FINAL ORDER BY model")
    return [LoadedModel(*row) for row in rows if db.table_exists(row[1])]


def resolve_model(db: Database, settings: Settings, explicit: str | None = None) -> LoadedModel:
    """The model a query uses: the one named, else the last one embedded, else the only one loaded."""
    models = loaded_models(db)
    if not models:
        raise NotFoundError("no embeddings are loaded; run `clipsql run` (or `clipsql demo`) first")
    wanted = explicit or (settings.model if "model" in settings.sources_seen else None)
    wanted = wanted or read_state(settings.paths()).get("last_model")
    by_name = {m.name: m for m in models}
    if wanted:
        name = canonical_model_name(wanted)
        if name in by_name:
            return by_name[name]
        if explicit or "model" in settings.sources_seen:
            raise NotFoundError(f"model {wanted!r} is not loaded; loaded: {', '.join(by_name)}")
    if len(models) == 1:
        return models[0]
    raise UsageError(f"several models are loaded ({', '.join(by_name)}); choose one with --model")


def photo_vector(db: Database, model: LoadedModel, photo_id: str) -> np.ndarray:
    rows = db.query_rows(db.sql("search/photo_vector.sql").text, {"table": model.table, "photo_id": photo_id})
    if rows:
        return np.asarray(rows[0][0], dtype=np.float32)
    known = db.command("SELECT count() FROM photos WHERE photo_id = {p:String}", {"p": photo_id})
    if not int(known):
        raise NotFoundError(f"photo id {photo_id!r} is not in the photos table")
    raise NotFoundError(
        f"photo {photo_id!r} has no vector for model {model.name} (its image could not be fetched or decoded; "
        "see the rejects/ folder in the data directory)"
    )


def image_vector(encoder: Encoder, settings: Settings, path_or_url: str) -> np.ndarray:
    fetcher = ImageFetcher(settings.paths().images, timeout=settings.http_timeout, retries=settings.http_retries)
    try:
        image = decode_image(fetcher.fetch(path_or_url).data, encoder.input_size)
    except ImageError as exc:
        raise UsageError(f"--image {path_or_url}: {exc.reason.replace('_', ' ')} ({exc.detail})") from None
    return encoder.embed([image])[0]


def text_vector(encoder: Encoder, texts: list[str]) -> np.ndarray:
    vectors = encoder.encode_text(texts)
    combined = vectors.sum(axis=0)
    return combined / max(float(np.linalg.norm(combined)), 1e-12)


def knn(db: Database, model: LoadedModel, vector: np.ndarray, k: int, exclude: str = "", exact: bool = False) -> list[dict[str, Any]]:
    if k <= 0:
        raise UsageError(f"-k must be at least 1, got {k}")
    if vector.shape != (model.dim,):
        raise UsageError(f"query vector has {vector.shape[0]} dimensions but model {model.name} has {model.dim}")
    params = {"table": model.table, "q": [float(x) for x in vector], "fetch": k + (1 if exclude else 0),
              "exclude": exclude, "k": k}
    settings = {"use_skip_indexes": 0} if exact else None
    result = db.query_arrow(db.sql("search/knn.sql").text, params, settings=settings)
    return result.to_pylist()


def search(
    db: Database,
    settings: Settings,
    *,
    photo_id: str | None = None,
    image: str | None = None,
    text: list[str] | None = None,
    k: int = 10,
    model: str | None = None,
    exact: bool = False,
    encoder: Encoder | None = None,
) -> list[dict[str, Any]]:
    given = [x for x in (photo_id, image, text) if x]
    if len(given) != 1:
        raise UsageError("give exactly one of --photo-id, --image or --text")
    loaded = resolve_model(db, settings, model)
    if photo_id:
        vector = photo_vector(db, loaded, photo_id)
    else:
        encoder = encoder or load_encoder(loaded.name, settings.device)
        vector = image_vector(encoder, settings, image) if image else text_vector(encoder, list(text or []))
    return knn(db, loaded, vector, k, exclude=photo_id or "", exact=exact)
