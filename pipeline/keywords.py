"""Keyword vectors (system 4): every distinct keyword encoded with the model's text tower.

With keywords and images in one space, clipsql can answer "keywords like this keyword", and
tag a photo (or any image or text) with the keywords nearest to its vector, including keywords
nobody attached to it. Vectors are computed once per keyword and model during `embed`, kept as
Parquet parts next to the model's image vectors, and loaded into `keyword_vectors_<model>`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from .config import Settings
from .db import Database
from .encoders import Encoder
from .errors import NotFoundError, UsageError
from .fsutil import atomic_write_parquet
from .search import LoadedModel, vector_param
from .store import EmbeddingStore

KEYWORD_SCHEMA = pa.schema([("keyword", pa.string()), ("embedding", pa.list_(pa.float32())),
                            ("embedded_at", pa.timestamp("ms", tz="UTC"))])
TEXT_BATCH = 256


def keyword_parts(store: EmbeddingStore) -> list:
    return sorted(store.dir.glob("keywords-*.parquet")) if store.dir.is_dir() else []


def stored_keywords(store: EmbeddingStore) -> pa.Table:
    """Each keyword's vector once (parts never overlap; if a crash made them, the first wins)."""
    parts = keyword_parts(store)
    if not parts:
        return KEYWORD_SCHEMA.empty_table()
    table = pq.read_table(parts, schema=KEYWORD_SCHEMA)
    _, first = np.unique(np.asarray(table["keyword"].to_pylist(), dtype=object), return_index=True)
    return table if len(first) == table.num_rows else table.take(pa.array(np.sort(first)))


def missing_keywords(settings: Settings, store: EmbeddingStore) -> list[str]:
    path = settings.paths().parquet / "keywords.parquet"
    if not path.exists():
        return []
    wanted = pc.unique(pq.read_table(path, columns=["keyword"])["keyword"].combine_chunks())
    wanted = wanted.filter(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(wanted)), 0))
    have = stored_keywords(store)["keyword"]
    return wanted.filter(pc.invert(pc.is_in(wanted, have))).to_pylist()


def embed_keywords(encoder: Encoder, store: EmbeddingStore, keywords: list[str], flush_rows: int = 4096) -> int:
    """Encode `keywords` with the text tower and append them as parts; returns how many."""
    done = 0
    with tqdm(total=len(keywords), unit="kw", desc=f"keywords {store.slug}", disable=None, leave=False) as bar:
        for start in range(0, len(keywords), flush_rows):
            chunk = keywords[start:start + flush_rows]
            vectors = np.concatenate([encoder.encode_text(chunk[i:i + TEXT_BATCH])
                                      for i in range(0, len(chunk), TEXT_BATCH)]).astype(np.float32)
            dim = vectors.shape[1]
            offsets = pa.array(np.arange(0, vectors.size + 1, dim, dtype=np.int32))
            table = pa.table({"keyword": chunk,
                              "embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel(), pa.float32())),
                              "embedded_at": pa.array([int(time.time() * 1000)] * len(chunk),
                                                      pa.timestamp("ms", tz="UTC"))})
            atomic_write_parquet(store.dir / f"keywords-{time.time_ns()}.parquet", table)
            done += len(chunk)
            bar.update(len(chunk))
    return done


def keyword_table(model: LoadedModel) -> str:
    return "keyword_vectors_" + model.table.removeprefix("embeddings_")


def nearest_keywords(db: Database, model: LoadedModel, vector: np.ndarray, k: int, *, exclude: str = "",
                     photo_id: str = "") -> list[dict[str, Any]]:
    """The k keywords nearest to `vector`, with how many photos carry each (and whether `photo_id` does)."""
    if k <= 0:
        raise UsageError(f"-k must be at least 1, got {k}")
    table = require_keyword_table(db, model)
    nearest = db.query_arrow(db.sql("search/nearest_keywords.sql").text,
                             {"table": table, "q": vector_param(vector), "exclude": exclude, "k": k})
    counts = db.query_arrow(db.sql("search/keyword_photos.sql").text,
                            {"keywords": nearest["keyword"].to_pylist(), "photo_id": photo_id})
    joined = nearest.join(counts, keys="keyword", join_type="left outer")
    joined = joined.sort_by([("distance", "ascending"), ("keyword", "ascending")])
    rows = joined.to_pylist()
    for row in rows:
        row["photos"] = row["photos"] or 0
        row["tagged"] = bool(row.pop("tagged") or False)
        if not photo_id:
            row.pop("tagged")
    return rows


def require_keyword_table(db: Database, model: LoadedModel) -> str:
    table = keyword_table(model)
    if not db.table_exists(table):
        raise NotFoundError(f"model {model.name} has no keyword vectors; they need a model with a text tower "
                            "(CLIP), computed by `clipsql embed` and loaded by `clipsql load`")
    return table


def keyword_vector(db: Database, model: LoadedModel, keyword: str) -> np.ndarray | None:
    table = require_keyword_table(db, model)
    rows = db.query_rows(db.sql("search/keyword_vector.sql").text, {"table": table, "keyword": keyword})
    return np.asarray(rows[0][0], dtype=np.float32) if rows else None
