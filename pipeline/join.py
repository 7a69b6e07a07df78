"""Similarity joins (system 5): every photo of set A with its neighbours in set B.

Sets are selections (`keyword:lake`, `collection:...`, all photos); set B may also be every
photo of another data directory (a separately loaded image set, embedded with the same model).
Two plans:

- `exact` streams A from the database in batches and compares each batch with all of B held as
  one float32 matrix (B's vectors come out of ClickHouse once, as Arrow). One matrix product per
  batch replaces |A| separate scans, so a 25k x 25k self-join takes seconds, and memory stays at
  |B| vectors plus one batch's distance block.
- `index` asks the database for each row of A (`nearest` through the HNSW index, B as the
  filter). It is the plan that works against a large ClickHouse server, and is slower per row.

kNN keeps each A photo's k nearest B photos (never itself); range keeps every pair within the
radius. Pairs stream out as Arrow batches, to a Parquet file or to the terminal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from .db import Database
from .errors import NotFoundError, UsageError
from .fsutil import atomic_write
from .search import METRICS, LoadedModel, SearchOptions, nearest
from .selection import Selection
from .sqlfile import fill_template
from .store import EmbeddingStore

PAIR_SCHEMA = pa.schema([("a_photo_id", pa.string()), ("b_photo_id", pa.string()), ("rank", pa.uint32()),
                         ("distance", pa.float32())])
JOIN_METHODS = ("exact", "index")


@dataclass
class JoinSpec:
    a: Selection
    b: Selection
    k: int | None = 10
    radius: float | None = None
    metric: str = "cosine"
    method: str = "exact"
    batch_size: int = 512
    b_data_dir: Path | None = None  # set B from another data directory's stored vectors

    def check(self) -> None:
        if (self.k is None) == (self.radius is None):
            raise UsageError("give either -k (kNN join) or --radius (range join)")
        if self.k is not None and self.k <= 0:
            raise UsageError(f"-k must be at least 1, got {self.k}")
        if self.radius is not None and not (np.isfinite(self.radius) and self.radius >= 0):
            raise UsageError(f"--radius must be a non-negative number, got {self.radius}")
        if self.metric not in METRICS:
            raise UsageError(f"--metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.method not in JOIN_METHODS:
            raise UsageError(f"--method must be one of {', '.join(JOIN_METHODS)}, got {self.method!r}")
        if self.b_data_dir is not None and (self.method != "exact" or not self.b.is_all):
            raise UsageError("--b-data-dir joins with every stored vector of that data directory: use it with "
                             "--method exact and without --b")


def _vectors_sql(db: Database, selection: Selection, prefix: str) -> tuple[str, dict]:
    condition, params = selection.condition(prefix)
    return fill_template(db.sql("search/selection_vectors.sql").statements()[0], {"filter": condition}), params


def _matrix(batch: pa.RecordBatch | pa.Table, dim: int) -> np.ndarray:
    column = batch.column("embedding")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)


def read_set(db: Database, model: LoadedModel, selection: Selection, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """All photo ids and vectors of a selection, as numpy arrays (ids sorted)."""
    sql, params = _vectors_sql(db, selection, prefix)
    table = db.query_arrow(sql, {"table": model.table, **params})
    return np.asarray(table["photo_id"].to_pylist(), dtype=object), _matrix(table, model.dim)


def read_external_set(data_dir: Path, model: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    """The stored vectors of `model` in another data directory (a separately loaded image set)."""
    store = EmbeddingStore(Path(data_dir) / "embeddings", model.name)
    meta = store.meta()
    if meta is None:
        raise NotFoundError(f"--b-data-dir {data_dir}: no vectors of model {model.name} there; run `clipsql embed "
                            f"--model {model.name} --data-dir {data_dir}` first")
    if int(meta["dim"]) != model.dim:
        raise UsageError(f"--b-data-dir {data_dir}: its {model.name} vectors have {meta['dim']} dimensions, "
                         f"this database's have {model.dim}")
    table = store.read_all()
    return np.asarray(table["photo_id"].to_pylist(), dtype=object), _matrix(table, model.dim)


def _distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray, metric: str) -> np.ndarray:
    dots = a @ b.T
    if metric == "cosine":
        a_norm = np.linalg.norm(a, axis=1, keepdims=True)
        return 1.0 - dots / np.maximum(a_norm * np.sqrt(b_sq)[None, :], 1e-12)
    a_sq = np.einsum("ij,ij->i", a, a)[:, None]
    return np.sqrt(np.maximum(a_sq + b_sq[None, :] - 2.0 * dots, 0.0))


def _knn_block(a_ids: np.ndarray, b_ids: np.ndarray, dist: np.ndarray, k: int) -> pa.RecordBatch:
    take = min(k, dist.shape[1])
    if take == 0:
        return pa.RecordBatch.from_pylist([], schema=PAIR_SCHEMA)
    if take < dist.shape[1]:
        part = np.argpartition(dist, take - 1, axis=1)[:, :take]
    else:
        part = np.broadcast_to(np.arange(dist.shape[1]), dist.shape)
    part_dist = np.take_along_axis(dist, part, axis=1)
    order = np.argsort(part_dist, axis=1, kind="stable")
    cols = np.take_along_axis(part, order, axis=1)
    values = np.take_along_axis(part_dist, order, axis=1)
    keep = np.isfinite(values)  # fewer than k candidates: the photo itself was masked out
    rows = np.broadcast_to(np.arange(len(dist))[:, None], values.shape)
    ranks = np.broadcast_to(np.arange(1, take + 1, dtype=np.uint32), values.shape)
    return pa.RecordBatch.from_arrays([
        pa.array(a_ids[rows[keep]].tolist(), pa.string()), pa.array(b_ids[cols[keep]].tolist(), pa.string()),
        pa.array(ranks[keep]), pa.array(values[keep].astype(np.float32))], schema=PAIR_SCHEMA)


def _range_block(a_ids: np.ndarray, b_ids: np.ndarray, dist: np.ndarray, radius: float) -> pa.RecordBatch:
    rows, cols = np.nonzero(dist <= radius)
    values = dist[rows, cols]
    order = np.lexsort((values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1] if len(rows) else np.array([], dtype=int)
    ranks = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)])) + 1
    return pa.RecordBatch.from_arrays([
        pa.array(a_ids[rows].tolist(), pa.string()), pa.array(b_ids[cols].tolist(), pa.string()),
        pa.array(ranks.astype(np.uint32)), pa.array(values.astype(np.float32))], schema=PAIR_SCHEMA)


def exact_join(db: Database, model: LoadedModel, spec: JoinSpec) -> Iterator[pa.RecordBatch]:
    if spec.b_data_dir is not None:
        b_ids, b = read_external_set(spec.b_data_dir, model)
        b_position = pd.Index([])  # another collection: no photo of A is one of B's
    else:
        b_ids, b = read_set(db, model, spec.b, "b")
        b_position = pd.Index(b_ids)
    b_sq = np.einsum("ij,ij->i", b, b)
    sql, params = _vectors_sql(db, spec.a, "a")
    total = int(db.command(f"SELECT count() FROM ({sql})", {"table": model.table, **params}))
    pending_ids: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    with tqdm(total=total, unit="photo", desc="join", disable=None, leave=False) as bar:
        def flush() -> pa.RecordBatch:
            a_ids = np.concatenate(pending_ids)
            a = np.concatenate(pending)
            pending_ids.clear()
            pending.clear()
            dist = _distances(a, b, b_sq, spec.metric)
            same = b_position.get_indexer(a_ids)  # a photo is never its own neighbour
            hit = same >= 0
            dist[np.flatnonzero(hit), same[hit]] = np.inf
            bar.update(len(a_ids))
            return (_knn_block(a_ids, b_ids, dist, spec.k) if spec.k is not None
                    else _range_block(a_ids, b_ids, dist, spec.radius))

        size = 0
        for batch in db.stream_arrow(sql, {"table": model.table, **params}):
            pending_ids.append(np.asarray(batch.column("photo_id").to_pylist(), dtype=object))
            pending.append(_matrix(batch, model.dim))
            size += batch.num_rows
            if size >= spec.batch_size:
                yield flush()
                size = 0
        if pending:
            yield flush()


def index_join(db: Database, model: LoadedModel, spec: JoinSpec) -> Iterator[pa.RecordBatch]:
    sql, params = _vectors_sql(db, spec.a, "a")
    a_table = db.query_arrow(sql, {"table": model.table, **params})
    a_ids = a_table["photo_id"].to_pylist()
    a = _matrix(a_table, model.dim)
    options = SearchOptions(k=spec.k or 10, radius=spec.radius, metric=spec.metric, within=spec.b)
    for start in tqdm(range(0, len(a_ids), spec.batch_size), unit="batch", desc="join", disable=None, leave=False):
        rows: list[dict] = []
        for photo_id, vector in zip(a_ids[start:start + spec.batch_size], a[start:start + spec.batch_size],
                                    strict=True):
            result = nearest(db, model, vector, replace(options, exclude=photo_id))
            rows += [{"a_photo_id": photo_id, "b_photo_id": row["photo_id"], "rank": rank,
                      "distance": row["distance"]} for rank, row in enumerate(result.rows, 1)]
        yield pa.RecordBatch.from_pylist(rows, PAIR_SCHEMA)


def similarity_join(db: Database, model: LoadedModel, spec: JoinSpec) -> Iterator[pa.RecordBatch]:
    spec.check()
    return exact_join(db, model, spec) if spec.method == "exact" else index_join(db, model, spec)


def write_pairs(batches: Iterator[pa.RecordBatch], path: Path) -> int:
    """Stream pairs into a Parquet file, written atomically; returns the number of pairs."""
    count = 0

    def write(temporary: Path) -> None:
        nonlocal count
        with pq.ParquetWriter(temporary, PAIR_SCHEMA, compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
                count += batch.num_rows

    atomic_write(path, write)
    return count
