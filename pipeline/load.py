"""Stage 3, load: Parquet -> ClickHouse tables, swapped in atomically, then the vector index.

Every table is built as `_stage_<name>` from its DDL in `sql/tables/`, filled through Arrow,
checked, and exchanged with the live table in one statement, so queries see either the old
or the new table and a re-run never duplicates rows. Embedding tables get their HNSW index
after the bulk insert and a merge to one part (building it on insert and again on merge would
build it twice). Tables whose source files did not change are left alone.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from clickhouse_connect.driver.binding import quote_identifier
from tqdm import tqdm

from . import ivf
from .config import Settings
from .db import Database
from .dialect import CLICKHOUSE, Dialect, get_dialect
from .errors import ClipsqlError, DatabaseError
from .failpoints import failpoint
from .keywords import keyword_parts, stored_keywords
from .report import StageReport
from .schemas import TABLES
from .store import EmbeddingStore, HashStore, stored_models

INSERT_CHUNK = 200_000
SEARCH_DETAILS = ["photo_image_url", "photo_description", "photographer_username"]
STAGE_PREFIX = "_stage_"


@dataclass
class IndexParams:
    """HNSW build parameters; see sql/index/add_vector_index.sql."""

    metric: str = "cosineDistance"
    quantization: str = "bf16"
    m: int = 32
    ef_construction: int = 128
    ivf_lists: int | None = None  # k-means cells; None: about sqrt(vectors); 0: no IVF

    def template(self, dim: int) -> dict:
        if self.metric not in ("cosineDistance", "L2Distance"):
            raise ClipsqlError(f"index metric must be cosineDistance or L2Distance, got {self.metric!r}")
        if self.quantization not in ("f64", "f32", "f16", "bf16", "i8", "b1"):
            raise ClipsqlError(f"index quantization must be f64, f32, f16, bf16, i8 or b1, got {self.quantization!r}")
        if self.m < 2 or self.ef_construction < 1:
            raise ClipsqlError(f"index M must be at least 2 and ef_construction at least 1, got {self.m}, "
                               f"{self.ef_construction}")
        return {"metric": f"'{self.metric}'", "dim": int(dim), "quantization": f"'{self.quantization}'",
                "m": int(self.m), "ef_construction": int(self.ef_construction)}

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexParams:
        return cls(quantization=settings.index_quantization, m=settings.index_m,
                   ef_construction=settings.index_ef_construction, ivf_lists=settings.ivf_lists)

    def fingerprint(self, dim: int) -> str:
        return f"{self.template(dim)}|ivf={self.ivf_lists}"


def ensure_catalog(db: Database) -> None:
    db.run_file("tables/models.sql")
    db.run_file("tables/load_state.sql")


def _fingerprint_file(path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()


def ddl_version(db: Database, relative: str) -> str:
    """A hash of a table's DDL file: a new clipsql with a changed table definition rebuilds it."""
    return hashlib.sha256(db.sql(relative).text.encode()).hexdigest()[:16]


def loaded_fingerprint(db: Database, name: str) -> str | None:
    rows = db.query_rows("SELECT fingerprint FROM load_state FINAL WHERE object = {o:String}", {"o": name})
    return rows[0][0] if rows else None


def _record(db: Database, name: str, fingerprint: str, rows: int) -> None:
    db.insert_arrow("load_state", pa.table({
        "object": [name], "fingerprint": [fingerprint], "rows": pa.array([rows], pa.uint64()),
        "loaded_at": pa.array([int(time.time() * 1000)], pa.timestamp("ms", tz="UTC")),
    }))


def _insert(db: Database, table: str, data: pa.Table, desc: str) -> None:
    """Insert an Arrow table in chunks, by column name.

    In chDB the engine reads each chunk in place through the `Python()` table function, about
    2.5x the rows/s of insert_arrow, which serialises the chunk to a temporary Arrow file and
    has the engine parse it back (bench/ measures both). A server gets insert_arrow.
    """
    columns = ", ".join(quote_identifier(name) for name in data.column_names)
    with tqdm(total=data.num_rows, unit="row", desc=desc, disable=None, leave=False) as bar:
        for offset in range(0, data.num_rows, INSERT_CHUNK):
            clipsql_insert_chunk = data.slice(offset, INSERT_CHUNK)  # Python() below finds it by this name
            if db.is_embedded and clipsql_insert_chunk.num_rows:
                db.command(f"INSERT INTO {quote_identifier(table)} ({columns}) SELECT {columns} "
                           "FROM Python(clipsql_insert_chunk)")
            else:
                db.insert_arrow(table, clipsql_insert_chunk)
            bar.update(clipsql_insert_chunk.num_rows)


def swap_in(db: Database, live: str, stage: str) -> None:
    """Make `stage` the live table atomically and drop what was live before."""
    failpoint("load.before_swap")
    if db.table_exists(live):
        db.command("EXCHANGE TABLES {a:Identifier} AND {b:Identifier}", {"a": live, "b": stage})
        failpoint("load.after_exchange")
        db.command("DROP TABLE {t:Identifier} SYNC", {"t": stage})
    else:
        db.command("RENAME TABLE {a:Identifier} TO {b:Identifier}", {"a": stage, "b": live})


def _load_metadata_table(db: Database, settings: Settings, table: str, report: StageReport) -> None:
    path = settings.paths().parquet / f"{table}.parquet"
    data = pq.read_table(path)
    fingerprint = f"{_fingerprint_file(path)}|{ddl_version(db, f'tables/{table}.sql')}"
    stats = {"rows": data.num_rows}
    if loaded_fingerprint(db, table) == fingerprint and db.table_exists(table):
        report.skipped += data.num_rows
        stats["unchanged"] = True
    else:
        stage = STAGE_PREFIX + table
        db.command("DROP TABLE IF EXISTS {t:Identifier} SYNC", {"t": stage})
        db.run_file(f"tables/{table}.sql", {"table": stage})
        _insert(db, stage, data, f"load {table}")
        failpoint("load.table_inserted")
        loaded = db.count(stage)
        if loaded != data.num_rows:
            raise DatabaseError(f"load {table}: inserted {data.num_rows} rows but the table holds {loaded}")
        swap_in(db, table, stage)
        failpoint("load.swapped")
        _record(db, table, fingerprint, data.num_rows)
        report.rows_out += data.num_rows
    report.rows_in += data.num_rows
    report.details.setdefault("tables", {})[table] = stats


def _valid_vector_rows(vectors: pa.ChunkedArray, dim: int) -> np.ndarray:
    vectors = vectors.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(vectors), 0).to_numpy(zero_copy_only=False)
    ok = lengths == dim
    values = pc.list_flatten(vectors).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(vectors).to_numpy(zero_copy_only=False)
    ok[np.unique(parents[~np.isfinite(values)])] = False
    return ok


def _with_photo_details(vectors: pa.Table, photos_path) -> pa.Table:
    """Copy what a search result shows (URL, description, photographer) next to each vector."""
    details = pq.read_table(photos_path, columns=["photo_id", *SEARCH_DETAILS])
    rows = pc.index_in(vectors["photo_id"], value_set=details["photo_id"].combine_chunks())
    for name in SEARCH_DETAILS:  # an Arrow join cannot carry the list column along, so take by position
        vectors = vectors.append_column(name, pc.fill_null(details[name].take(rows), ""))
    return vectors


def _ivf_cells(vectors: pa.Table, dim: int, params: IndexParams, stats: dict) -> tuple[pa.Table | None, pa.Table]:
    """k-means centroids as a table, and the vectors with their `cell` column (0 everywhere without IVF)."""
    lists = ivf.default_lists(vectors.num_rows) if params.ivf_lists is None else params.ivf_lists
    if lists == 0 or vectors.num_rows == 0:
        return None, vectors.append_column("cell", pa.array(np.zeros(vectors.num_rows, np.uint32)))
    started = time.monotonic()
    matrix = pc.list_flatten(vectors["embedding"].combine_chunks()).to_numpy().reshape(-1, dim)
    centroids = ivf.kmeans(matrix, lists)
    cells = ivf.assign(matrix, centroids)
    counts = np.bincount(cells, minlength=len(centroids)).astype(np.uint64)
    flat = pa.array(centroids.ravel(), pa.float32())
    offsets = pa.array(np.arange(0, centroids.size + 1, dim, dtype=np.int32))
    table = pa.table({"cell": pa.array(np.arange(len(centroids), dtype=np.uint32)),
                      "centroid": pa.ListArray.from_arrays(offsets, flat), "vectors": pa.array(counts)})
    stats.update({"ivf_lists": len(centroids), "ivf_build_s": round(time.monotonic() - started, 2),
                  "ivf_largest_cell": int(counts.max())})
    return table, vectors.append_column("cell", pa.array(cells))


def build_vector_index(db: Database, table: str, dim: int, params: IndexParams, dialect: Dialect = CLICKHOUSE) -> dict:
    """Merge to one part, then build the vector index once and check that it exists."""
    started = time.monotonic()
    parts = int(db.command("SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = {t:String} "
                           "AND active", {"t": table}))
    if parts > 1:
        db.command("OPTIMIZE TABLE {t:Identifier} FINAL", {"t": table}, settings={"optimize_throw_if_noop": 0})
    size = dialect.build_index(db, table, params.template(dim))
    rows = db.count(table)
    if rows and size == 0 and dialect is CLICKHOUSE:
        raise DatabaseError(f"vector index on {table} was not built (0 bytes); run `clipsql load` again")
    return {"index_bytes": size, "index_build_s": round(time.monotonic() - started, 2), "parts_before_merge": parts}


def load_embeddings(db: Database, settings: Settings, store: EmbeddingStore, photo_ids: pa.Array,
                    photos_fingerprint: str, params: IndexParams, report: StageReport) -> None:
    meta = store.meta()
    if meta is None:
        return
    dim = int(meta["dim"])
    fingerprint = hashlib.sha256(
        f"{store.fingerprint()}|{photos_fingerprint}|{params.fingerprint(dim)}|{ddl_version(db, 'tables/embeddings.sql')}"
        .encode()).hexdigest()
    stats: dict = {"table": store.table_name, "dim": dim}
    report.details.setdefault("models", {})[store.model] = stats
    if loaded_fingerprint(db, store.table_name) == fingerprint and db.table_exists(store.table_name):
        stats["unchanged"] = True
        stats["vectors"] = db.count(store.table_name)
        report.skipped += stats["vectors"]
        report.rows_in += stats["vectors"]
        return
    vectors = store.read_all()
    current = pc.is_in(vectors["photo_id"], photo_ids)
    removed = vectors.num_rows - (pc.sum(current).as_py() or 0)
    vectors = vectors.filter(current)
    ok = _valid_vector_rows(vectors["embedding"], dim)
    bad = vectors.filter(pa.array(~ok))
    vectors = vectors.filter(pa.array(ok))
    reject_path = settings.paths().rejects / f"load-{store.slug}.csv"
    if bad.num_rows:
        reject_path.parent.mkdir(parents=True, exist_ok=True)
        pacsv.write_csv(pa.table({"photo_id": bad["photo_id"], "reason": pa.array(
            [f"vector is not {dim} finite numbers"] * bad.num_rows)}), reject_path)
        report.rejects_by_reason[f"{store.slug}: vector is not {dim} finite numbers"] += bad.num_rows
    else:
        reject_path.unlink(missing_ok=True)
    report.rows_in += vectors.num_rows + bad.num_rows + removed
    report.rejected += bad.num_rows
    report.skipped += removed

    stage = STAGE_PREFIX + store.table_name
    db.command("DROP TABLE IF EXISTS {t:Identifier} SYNC", {"t": stage})
    db.run_file("tables/embeddings.sql", {"table": stage, "dim": dim})
    centroids, vectors = _ivf_cells(vectors, dim, params, stats)
    vectors = _with_photo_details(vectors, settings.paths().parquet / "photos.parquet")
    _insert(db, stage, vectors, f"load {store.slug}")
    failpoint("load.vectors_inserted")
    stats.update(build_vector_index(db, stage, dim, params, get_dialect(settings.dialect, db)))
    failpoint("load.index_built")
    ivf_table = "ivf_" + store.slug
    if centroids is not None:
        db.command("DROP TABLE IF EXISTS {t:Identifier} SYNC", {"t": STAGE_PREFIX + ivf_table})
        db.run_file("tables/ivf_centroids.sql", {"table": STAGE_PREFIX + ivf_table})
        db.insert_arrow(STAGE_PREFIX + ivf_table, centroids)
    swap_in(db, store.table_name, stage)
    if centroids is not None:
        swap_in(db, ivf_table, STAGE_PREFIX + ivf_table)
    else:
        db.command("DROP TABLE IF EXISTS {t:Identifier} SYNC", {"t": ivf_table})
    db.run_file("tables/photo_embeddings.sql")
    db.insert_arrow("models", pa.table({
        "model": [store.model], "table_name": [store.table_name], "dim": pa.array([dim], pa.uint32()),
        "encoder": [meta.get("encoder", "")], "vectors": pa.array([vectors.num_rows], pa.uint64()),
        "loaded_at": pa.array([int(time.time() * 1000)], pa.timestamp("ms", tz="UTC")),
    }))
    _record(db, store.table_name, fingerprint, vectors.num_rows)
    stats["vectors"] = vectors.num_rows
    stats["removed_photos"] = removed
    report.rows_out += vectors.num_rows


def load(db: Database, settings: Settings, params: IndexParams | None = None) -> StageReport:
    params = params or IndexParams.from_settings(settings)
    report = StageReport("load")
    parquet = settings.paths().parquet
    if not (parquet / "photos.parquet").exists():
        raise ClipsqlError(f"{parquet / 'photos.parquet'} does not exist; run `clipsql extract` first")
    ensure_catalog(db)
    for table in TABLES:
        _load_metadata_table(db, settings, table, report)
    photo_ids = pq.read_table(parquet / "photos.parquet", columns=["photo_id"])["photo_id"].combine_chunks()
    photos_fingerprint = _fingerprint_file(parquet / "photos.parquet")
    for model in stored_models(settings.paths().embeddings):
        store = EmbeddingStore(settings.paths().embeddings, model)
        load_embeddings(db, settings, store, photo_ids, photos_fingerprint, params, report)
        keywords = load_keyword_vectors(db, store)
        if keywords:
            report.details.setdefault("models", {}).setdefault(store.model, {})["keywords"] = keywords
    load_hashes(db, HashStore(settings.paths().hashes), photo_ids, photos_fingerprint, report)
    return report.finish()


def load_keyword_vectors(db: Database, store: EmbeddingStore) -> int:
    """The model's keyword text vectors (CLIP-style models only), swapped in like every table."""
    table_name = "keyword_vectors_" + store.slug
    keywords = stored_keywords(store)
    if keywords.num_rows == 0:
        return 0
    fingerprint = hashlib.sha256("|".join(p.name for p in keyword_parts(store)).encode()).hexdigest()
    if loaded_fingerprint(db, table_name) == fingerprint and db.table_exists(table_name):
        return keywords.num_rows
    stage = STAGE_PREFIX + table_name
    db.command("DROP TABLE IF EXISTS {t:Identifier} SYNC", {"t": stage})
    db.run_file("tables/keyword_vectors.sql", {"table": stage, "dim": len(keywords["embedding"][0])})
    _insert(db, stage, keywords.select(["keyword", "embedding"]), f"load {table_name}")
    swap_in(db, table_name, stage)
    _record(db, table_name, fingerprint, keywords.num_rows)
    return keywords.num_rows


def load_hashes(db: Database, store: HashStore, photo_ids: pa.Array, photos_fingerprint: str,
                report: StageReport) -> None:
    """The perceptual hashes of current photos, for near-duplicate queries."""
    fingerprint = hashlib.sha256(f"{store.fingerprint()}|{photos_fingerprint}".encode()).hexdigest()
    if loaded_fingerprint(db, "photo_hashes") == fingerprint and db.table_exists("photo_hashes"):
        return
    hashes = store.read_all()
    hashes = hashes.filter(pc.is_in(hashes["photo_id"], photo_ids)).select(["photo_id", "sha256", "phash", "image_url"])
    stage = STAGE_PREFIX + "photo_hashes"
    db.command("DROP TABLE IF EXISTS {t:Identifier} SYNC", {"t": stage})
    db.run_file("tables/photo_hashes.sql", {"table": stage})
    _insert(db, stage, hashes, "load photo_hashes")
    swap_in(db, "photo_hashes", stage)
    _record(db, "photo_hashes", fingerprint, hashes.num_rows)
    report.details["photo_hashes"] = hashes.num_rows
