"""clipsql itself, measured through its own code paths on chDB.

Tables come from the project's DDL (`sql/tables/embeddings.sql`, `photos.sql`,
`conversions.sql`, `photo_embeddings.sql`), vectors go in through `pipeline.load._insert` and
the index through `pipeline.load.build_vector_index`, and searches run through
`pipeline.search` exactly as `clipsql search` does. Next to those, the bare statements
(`ORDER BY cosineDistance(...) LIMIT 10` on the table) show how much of a query's time is the
index and how much is clipsql around it.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import Settings
from pipeline.db import Database, open_client
from pipeline.load import IndexParams, _insert, build_vector_index, ensure_catalog

from .common import PeakMemory, progress, repeat, stats
from .data import Dataset, conversions_table, embeddings_table, recall_at_k, row_of

K = 10
RAW_KNN = "SELECT photo_id FROM {t:Identifier} ORDER BY cosineDistance(embedding, {q:Array(Float32)}) LIMIT 10"
# The same index query but also returning the vector, as a candidates query that rescores in an outer
# query does: ClickHouse then reads (and rescores) whole granules instead of answering from the index.
RAW_KNN_WITH_VECTOR = ("SELECT photo_id, embedding FROM {t:Identifier} "
                       "ORDER BY cosineDistance(embedding, {q:Array(Float32)}) LIMIT 10")
# Read settings that halve an exact scan on chDB (measured): read the part files through mmap
# instead of pread copies, and skip re-checksumming uncompressed (CODEC(NONE)) blocks on every read.
EXACT_READ_SETTINGS = {"local_filesystem_read_method": "mmap", "min_bytes_to_use_mmap_io": 1, "checksum_on_read": 0}


def compact_vector(q: np.ndarray) -> str:
    """A float32 vector as `[...]` text with 9 significant digits, which round-trips float32 exactly."""
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(q, dtype=np.float32)) + "]"


class ChdbBench:
    """One chDB database for the whole run (a process may hold only one chDB path at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dsn = f"chdb://{path}"
        self.db = Database(open_client(self.dsn), self.dsn)
        self.settings = Settings(data_dir=path.parent)
        ensure_catalog(self.db)

    def close(self) -> None:
        self.db.close()

    # -- tables ---------------------------------------------------------------------------------------
    def create_embeddings(self, table: str, dim: int) -> None:
        self.db.command("DROP TABLE IF EXISTS {t:Identifier} SYNC", {"t": table})
        self.db.run_file("tables/embeddings.sql", {"table": table, "dim": dim})

    def drop(self, *tables: str) -> None:
        for table in tables:
            self.db.command("DROP TABLE IF EXISTS {t:Identifier} SYNC", {"t": table})

    def columns(self, table: str) -> list[str]:
        return [r[0] for r in self.db.query_rows(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String} ORDER BY position",
            {"t": table})]

    # -- bulk load ------------------------------------------------------------------------------------
    def insert_paths(self) -> dict[str, Callable[[str, pa.Table], None]]:
        db = self.db

        def arrow(table: str, data: pa.Table) -> None:
            db.insert_arrow(table, data)

        def python_table(table: str, data: pa.Table) -> None:
            bench_arrow_chunk = data  # noqa: F841 - chDB's Python() table function finds it by name
            columns = ", ".join(f"`{c}`" for c in data.column_names)
            db.command(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM Python(bench_arrow_chunk)")

        def insert_df(table: str, data: pa.Table) -> None:
            frame = data.to_pandas()
            db.client.insert_df(table, frame)

        def project(table: str, data: pa.Table) -> None:
            _insert(db, table, data, "bench load")

        return {"pipeline.load._insert": project, "insert_arrow": arrow, "Python() table function": python_table,
                "insert_df (list column)": insert_df}

    def bulk_load(self, data: Dataset, rows: int, df_rows: int, repeats: int) -> list[dict[str, Any]]:
        """rows/s and MB/s of each insert path, into a fresh embeddings table each time."""
        results = []
        for path, insert in self.insert_paths().items():
            n = min(data.n, df_rows if path.startswith("insert_df") else rows)
            table_data = embeddings_table(data.ids[:n], data.vectors[:n], "bench")
            megabytes = table_data.nbytes / 2**20
            timings, _ = repeat(lambda insert=insert, table_data=table_data: insert("bench_load", table_data), repeats,
                                setup=lambda: self.create_embeddings("bench_load", data.dim))
            loaded = self.db.count("bench_load")
            if loaded != n:
                raise RuntimeError(f"{path}: inserted {n} rows but the table holds {loaded}")
            best, median = min(timings), float(np.median(timings))
            results.append({"path": path, "rows": n, "mb": round(megabytes, 1), **stats(timings),
                            "rows_per_s": round(n / best), "rows_per_s_median": round(n / median),
                            "mb_per_s": round(megabytes / best, 1)})
            progress(f"  load {path}: {n / median:,.0f} rows/s (median of {repeats})")
        self.drop("bench_load")
        return results

    # -- the searchable table -------------------------------------------------------------------------
    def load_searchable(self, data: Dataset, table: str, model: str, params: IndexParams,
                        ivf: dict[str, Any] | None) -> dict[str, Any]:
        """Load all vectors through the project's insert path and build the index once (as `clipsql load`)."""
        self.drop(table, "ivf_" + table.removeprefix("embeddings_"))
        self.create_embeddings(table, data.dim)
        arrow = embeddings_table(data.ids, data.vectors, model)
        if ivf is not None:
            arrow = arrow.append_column("cell", pa.array(ivf["cells"], pa.uint32()))
        started = time.perf_counter()
        _insert(self.db, table, arrow, "bench load")
        loaded = time.perf_counter()
        with PeakMemory() as memory:
            info = build_vector_index(self.db, table, data.dim, params)
        built = time.perf_counter()
        if ivf is not None:
            centroids = "ivf_" + table.removeprefix("embeddings_")
            self.db.run_file("tables/ivf_centroids.sql", {"table": centroids})
            counts = np.bincount(ivf["cells"], minlength=len(ivf["centroids"]))
            self.db.insert_arrow(centroids, pa.table({
                "cell": pa.array(np.arange(len(counts), dtype=np.uint32)),
                "centroid": pa.array(list(ivf["centroids"].astype(np.float32)), pa.list_(pa.float32())),
                "vectors": pa.array(counts.astype(np.uint64))}))
        self.db.insert_arrow("models", pa.table({
            "model": [model], "table_name": [table], "dim": pa.array([data.dim], pa.uint32()),
            "encoder": ["bench"], "vectors": pa.array([data.n], pa.uint64()),
            "loaded_at": pa.array([int(time.time() * 1000)], pa.timestamp("ms", tz="UTC"))}))
        return {"load_s": round(loaded - started, 3), "build_s": round(built - loaded, 3),
                "load_plus_build_s": round(built - started, 3), "index_bytes": info["index_bytes"],
                "build_memory_mb": memory.growth_mb, "rows_per_s": round(data.n / max(loaded - started, 1e-9))}

    def rebuild_index(self, table: str, dim: int, params: IndexParams, repeats: int) -> dict[str, Any]:
        """Drop and rebuild the index `repeats` times (the first build is in load_searchable)."""
        timings = []
        for _ in range(repeats):
            self.db.command("ALTER TABLE {t:Identifier} DROP INDEX IF EXISTS vec", {"t": table},
                            settings={"mutations_sync": 2})
            started = time.perf_counter()
            build_vector_index(self.db, table, dim, params)
            timings.append(time.perf_counter() - started)
        return stats(timings)

    def photos(self, ids: list[str]) -> None:
        self.drop("photos")
        self.db.run_file("tables/photos.sql", {"table": "photos"})
        _insert(self.db, "photos", pa.table({"photo_id": pa.array(ids, pa.string())}), "bench photos")

    # -- queries --------------------------------------------------------------------------------------
    def timed_queries(self, run: Callable[[np.ndarray], list[str]], data: Dataset, queries: int) -> dict[str, Any]:
        vectors = data.queries[:queries]
        for q in vectors[:3]:
            run(q)  # the first query after a build loads the index into memory
        timings, answers = [], []
        for q in vectors:
            started = time.perf_counter()
            ids = run(q)
            timings.append(time.perf_counter() - started)
            answers.append([row_of(i) for i in ids])
        return {**stats(timings), "recall": recall_at_k(answers, data.truth[:len(vectors)], K)}

    def raw(self, table: str, settings: dict[str, Any], sql: str = RAW_KNN,
            compact: bool = False) -> Callable[[np.ndarray], list[str]]:
        """The bare index query. `compact` sends the vector as 9-digit text (exact for float32), not
        clickhouse-connect's 17-digit floats: less for the engine to parse per query."""
        def run(q: np.ndarray) -> list[str]:
            vector = compact_vector(q) if compact else q.tolist()
            rows = self.db.client.query(sql, parameters={"t": table, "q": vector}, settings=settings).result_rows
            return [r[0] for r in rows]

        return run

    def select_one(self, repeats: int = 50) -> dict[str, Any]:
        """The engine's per-query floor (parse, plan, return one row through clickhouse-connect)."""
        timings, _ = repeat(lambda: self.db.client.query("SELECT 1").result_rows, repeats, collect=False)
        return stats(timings)

    def bind_vector(self, data: Dataset, repeats: int = 50) -> dict[str, Any]:
        """The floor plus binding one query vector as {q:Array(Float32)} (sent as text, parsed by the engine)."""
        q = data.queries[0].tolist()
        timings, _ = repeat(lambda: self.db.client.query("SELECT length({q:Array(Float32)})", parameters={"q": q})
                            .result_rows, repeats, collect=False)
        return stats(timings)

    def uses_index(self, table: str, data: Dataset) -> bool:
        plan = self.db.client.query("EXPLAIN indexes = 1 " + RAW_KNN,
                                    parameters={"t": table, "q": data.queries[0].tolist()}).result_rows
        return any("vector_similarity" in str(r[0]) or "Name: vec" in str(r[0]) for r in plan)

    def clipsql_search(self, table: str, model: str, dim: int, method: str,
                       ef: int | None = None, nprobe: int | None = None) -> Callable[[np.ndarray], list[str]] | None:
        """`clipsql search` minus the query encoding: pipeline.search, whichever API this checkout has."""
        search = importlib.import_module("pipeline.search")
        loaded = search.LoadedModel(model, table, dim, "bench")
        if hasattr(search, "nearest") and hasattr(search, "SearchOptions"):
            options = search.SearchOptions(k=K, method=method, ef_search=ef, nprobe=nprobe)

            def run(q: np.ndarray) -> list[str]:
                return [row["photo_id"] for row in search.nearest(self.db, loaded, q, options).rows]

            return run
        if method == "ivf" or ef is not None:
            return None  # the older knn() has neither IVF nor an ef_search knob
        exact = method == "exact"
        return lambda q: [row["photo_id"] for row in search.knn(self.db, loaded, q, K, exact=exact)]

    # -- analytics ------------------------------------------------------------------------------------
    def analytics(self, data: Dataset, table: str, model: str, conversions: int, queries: int) -> dict[str, Any]:
        """queries/similar_downloads.sql (top-10 neighbours joined with the conversions) as `clipsql query` runs it."""
        from pipeline.queries import run_query

        arrow, downloads = conversions_table(data.ids, conversions)
        self.drop("conversions")
        self.db.run_file("tables/conversions.sql", {"table": "conversions"})
        started = time.perf_counter()
        _insert(self.db, "conversions", arrow, "bench conversions")
        load_s = time.perf_counter() - started
        self.db.command("OPTIMIZE TABLE conversions FINAL")
        self.db.run_file("tables/photo_embeddings.sql")
        targets = [data.ids[i] for i in np.linspace(0, data.n - 1, queries).astype(int)]
        checked = 0

        def via_file(photo_id: str) -> pa.Table:
            return run_query(self.db, self.settings, "similar_downloads", {"photo_id": photo_id, "k": K, "model": model})

        out: dict[str, Any] = {"conversions": conversions, "conversions_load_s": round(load_s, 3)}
        for name, fn in (("queries/similar_downloads.sql", via_file),):
            fn(targets[0])
            timings = []
            for photo_id in targets:
                began = time.perf_counter()
                result = fn(photo_id)
                timings.append(time.perf_counter() - began)
                got = result.to_pydict()
                if len(got["photo_id"]) != K:
                    raise RuntimeError(f"{name}: {len(got['photo_id'])} rows for {photo_id}, expected {K}")
                for pid, count in zip(got["photo_id"], got["downloads"], strict=True):
                    if int(count) != int(downloads[row_of(pid)]):
                        raise RuntimeError(f"{name}: {pid} has {count} downloads, numpy counts {downloads[row_of(pid)]}")
                    checked += 1
            out[name] = stats(timings)
        out["rows_checked_against_numpy"] = checked
        return out
