"""Embeddings on disk: append-only Parquet parts per model, plus remembered failures.

Each embed run adds parts (`part-<ns>.parquet`) written atomically; nothing is rewritten, so
a killed run loses at most the batch it was computing. The set of embedded photos is the union
of the parts; a photo embedded twice (an image that changed) keeps its newest vector. Failed
photos are kept the same way (`failed-<ns>.parquet`) so they are not fetched again unless the
user asks for it. One model's directory never touches another's.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import ModelError
from .fsutil import atomic_write_json, atomic_write_parquet, read_json
from .schemas import EMBEDDING_SCHEMA, FAILURE_SCHEMA, HASH_SCHEMA


def canonical_model_name(model: str) -> str:
    """Local model directories are named by absolute path, so a relative path means one model."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    return model


def model_slug(model: str) -> str:
    """A stable, SQL-safe name for a model, used for its directory and its table."""
    model = canonical_model_name(model)
    if model.startswith("/"):
        base = re.sub(r"[^a-z0-9]+", "_", Path(model).name.lower()).strip("_") or "model"
        return f"{base[:40]}_{hashlib.sha1(model.encode()).hexdigest()[:8]}"
    slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")
    if len(slug) > 56:
        slug = f"{slug[:47]}_{hashlib.sha1(model.encode()).hexdigest()[:8]}"
    return slug or "model"


def _latest_per_photo(table: pa.Table, time_column: str) -> pa.Table:
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, sort_keys=[("photo_id", "ascending"), (time_column, "descending")])
    table = table.take(order)
    ids = table["photo_id"]
    first = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)) if len(ids) > 1 else pa.array([], pa.bool_())
    keep = pa.concat_arrays([pa.array([True]), first.combine_chunks() if isinstance(first, pa.ChunkedArray) else first])
    return table.filter(keep)


def stored_models(root: Path) -> list[str]:
    """The models that have an embeddings directory, by their canonical names."""
    if not root.is_dir():
        return []
    names = [read_json(path / "model.json", {}).get("model") for path in sorted(root.iterdir())]
    return [name for name in names if name]


class PartDirectory:
    """A directory of append-only, atomically written Parquet parts named `<prefix>-<ns>.parquet`."""

    dir: Path

    def _parts(self, prefix: str) -> list[Path]:
        return sorted(self.dir.glob(f"{prefix}-*.parquet")) if self.dir.is_dir() else []

    def _latest(self, prefix: str, schema: pa.Schema, time_column: str) -> pa.Table:
        """The newest row per photo across all parts with this prefix."""
        parts = self._parts(prefix)
        if not parts:
            return schema.empty_table()
        return _latest_per_photo(pq.read_table(parts, schema=schema), time_column)

    def _write(self, prefix: str, table: pa.Table) -> Path | None:
        if table.num_rows == 0:
            return None
        path = self.dir / f"{prefix}-{time.time_ns()}.parquet"
        atomic_write_parquet(path, table)
        return path


class HashStore(PartDirectory):
    """Perceptual hashes of the images behind the current vectors, shared by all models.

    A photo's hash is tied to the sha256 of the image it was computed from, so a photo whose
    image changed is hashed again, and one re-linked to identical bytes is not."""

    def __init__(self, root: Path) -> None:
        self.dir = root

    def write(self, table: pa.Table) -> Path | None:
        return self._write("part", table.select(HASH_SCHEMA.names).cast(HASH_SCHEMA))

    def read_all(self) -> pa.Table:
        """The newest hash per photo."""
        return self._latest("part", HASH_SCHEMA, "hashed_at")

    def fingerprint(self) -> str:
        latest = self.read_all()
        digest = hashlib.sha256()
        for name in ("photo_id", "sha256"):
            digest.update("\x1f".join(latest[name].to_pylist()).encode())
        return digest.hexdigest()

    def compact(self) -> int:
        parts = self._parts("part")
        if len(parts) <= 1:
            return 0
        kept = self._write("part", self.read_all())
        for path in parts:
            if path != kept:
                path.unlink(missing_ok=True)
        return len(parts) - 1


class EmbeddingStore(PartDirectory):
    """The embeddings directory of one model."""

    def __init__(self, root: Path, model: str) -> None:
        self.model = canonical_model_name(model)
        self.slug = model_slug(model)
        self.dir = root / self.slug

    @property
    def table_name(self) -> str:
        return f"embeddings_{self.slug}"

    # -- model metadata --------------------------------------------------------------------------
    def meta(self) -> dict | None:
        return read_json(self.dir / "model.json")

    def ensure_meta(self, dim: int, encoder: str) -> None:
        existing = self.meta()
        if existing and existing["dim"] != dim:
            raise ModelError(
                f"model {self.model}: its stored vectors have {existing['dim']} dimensions but the model now "
                f"gives {dim}; use a new model name or delete {self.dir}"
            )
        if not existing:
            atomic_write_json(self.dir / "model.json", {"model": self.model, "dim": dim, "encoder": encoder,
                                                        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    # -- parts ----------------------------------------------------------------------------------
    def write_embeddings(self, table: pa.Table) -> Path | None:
        return self._write("part", table.select(EMBEDDING_SCHEMA.names).cast(EMBEDDING_SCHEMA))

    def write_failures(self, table: pa.Table) -> Path | None:
        return self._write("failed", table.select(FAILURE_SCHEMA.names).cast(FAILURE_SCHEMA))

    def embedded_ids(self) -> pa.Array:
        parts = self._parts("part")
        if not parts:
            return pa.array([], pa.string())
        ids = pq.read_table(parts, columns=["photo_id"]).column("photo_id")
        return pc.unique(ids.combine_chunks())

    def embedded_sources(self) -> pa.Table:
        """photo_id -> image_url and sha256 of the image its current vector came from."""
        parts = self._parts("part")
        columns = ["photo_id", "image_url", "sha256", "embedded_at"]
        if not parts:
            return pa.schema([EMBEDDING_SCHEMA.field(c) for c in columns]).empty_table().select(columns[:3])
        table = pq.read_table(parts, columns=columns)
        return _latest_per_photo(table, "embedded_at").select(columns[:3])

    def failures(self) -> pa.Table:
        """The latest failure per photo, where no vector was made after it (a photo whose new URL
        failed keeps its old vector and its failure)."""
        parts = self._parts("failed")
        if not parts:
            return FAILURE_SCHEMA.empty_table()
        failed = _latest_per_photo(pq.read_table(parts, schema=FAILURE_SCHEMA), "failed_at")
        vector_parts = self._parts("part")
        if not vector_parts:
            return failed
        latest = _latest_per_photo(pq.read_table(vector_parts, columns=["photo_id", "embedded_at"]), "embedded_at")
        joined = failed.join(latest, keys="photo_id", join_type="left outer")
        newer = pc.fill_null(pc.greater(joined["failed_at"], joined["embedded_at"]), True)
        return joined.filter(newer).select(FAILURE_SCHEMA.names).cast(FAILURE_SCHEMA)

    def read_all(self) -> pa.Table:
        """Every photo's newest vector."""
        return self._latest("part", EMBEDDING_SCHEMA, "embedded_at")

    def fingerprint(self) -> str:
        """Changes when any photo's current vector changes (not when parts are merged by gc):
        load uses it to skip models whose vectors did not change."""
        parts = self._parts("part")
        digest = hashlib.sha256()
        if parts:
            latest = _latest_per_photo(pq.read_table(parts, columns=["photo_id", "embedded_at", "sha256"]), "embedded_at")
            for column in latest.columns:
                digest.update("\x1f".join(map(str, column.to_pylist())).encode())
        return digest.hexdigest()

    def compact(self) -> int:
        """Merge all parts into one (newest vector per photo); returns how many files were removed.

        The merged part is written before the old ones are deleted, so a crash in between only
        leaves duplicates that reading already resolves."""
        removed = 0
        for prefix, reader in (("part", self.read_all), ("failed", self.failures)):
            parts = self._parts(prefix)
            if len(parts) <= 1 and prefix == "part":
                continue
            merged = reader()
            kept = self._write(prefix, merged) if merged.num_rows else None
            for path in parts:
                if path != kept:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed
