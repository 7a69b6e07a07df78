"""What is loaded: tables and row counts, models with coverage and index state, files on disk."""

from __future__ import annotations

from typing import Any

import pyarrow.csv as pacsv

from .config import Settings
from .db import Database
from .fsutil import read_json
from .schemas import TABLES
from .search import loaded_models
from .store import EmbeddingStore, stored_models


def collect_status(db: Database, settings: Settings) -> list[dict[str, Any]]:
    """One row per table and per model, in a shape that prints as a table and as JSON."""
    paths = settings.paths()
    manifest = read_json(paths.parquet / "_manifest.json", {}) or {}
    rows: list[dict[str, Any]] = []
    photos = db.count("photos") if db.table_exists("photos") else 0
    for table in TABLES:
        exists = db.table_exists(table)
        rows.append({"kind": "table", "name": table, "rows": db.count(table) if exists else None,
                     "detail": "" if exists else "not loaded"})
    indexes = {
        row[0]: row[1:]
        for row in db.query_rows(
            "SELECT table, type_full, data_compressed_bytes FROM system.data_skipping_indices "
            "WHERE database = currentDatabase() AND type = 'vector_similarity'"
        )
    }
    on_disk = set(stored_models(paths.embeddings))
    for model in loaded_models(db):
        vectors = db.count(model.table)
        store = EmbeddingStore(paths.embeddings, model.name)
        failed = store.failures().num_rows if model.name in on_disk else 0
        index = indexes.get(model.table)
        index_text = f"{index[0]}, {index[1] / 1e6:.1f} MB" if index else "none (exact scans only)"
        rows.append({
            "kind": "model", "name": model.name, "rows": vectors,
            "detail": f"{model.dim}-d {model.encoder}; coverage {vectors / photos:.1%} of {photos} photos; "
                      f"{failed} failed images; index {index_text}" if photos else f"{model.dim}-d; index {index_text}",
        })
        on_disk.discard(model.name)
    for name in sorted(on_disk):
        store = EmbeddingStore(paths.embeddings, name)
        rows.append({"kind": "model", "name": name, "rows": None,
                     "detail": f"{len(store.embedded_ids())} vectors on disk, not loaded (run clipsql load)"})
    rows.append({"kind": "dataset", "name": manifest.get("source", "none extracted"), "rows": None,
                 "detail": f"version {manifest.get('version', '-')}, extracted {manifest.get('extracted_at', '-')}"
                           + (f", limit {manifest['limit']}" if manifest.get("limit") else "")})
    if db.table_exists("runs"):
        for command, outcome, finished, error in db.query_rows(
            "SELECT command, outcome, finished_at, error FROM runs ORDER BY started_at DESC LIMIT 1"
        ):
            rows.append({"kind": "last run", "name": command, "rows": None,
                         "detail": f"{outcome} at {finished:%Y-%m-%d %H:%M:%S} UTC" + (f": {error}" if error else "")})
    for path in sorted(paths.rejects.glob("*.csv")) if paths.rejects.is_dir() else []:
        pending = pacsv.read_csv(path).num_rows
        rows.append({"kind": "rejects", "name": path.name, "rows": pending, "detail": str(path)})
    return rows
