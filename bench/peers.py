"""The alternatives a user would pick instead of clipsql, run in-process on the same vectors.

numpy exact (one matmul + argpartition per query), faiss `IndexFlatIP` (exact, BLAS),
hnswlib and faiss `IndexHNSWFlat` (the same HNSW graph idea as ClickHouse's usearch index),
with the same M and ef_construction as clipsql's index. Each search is timed one query at a
time, since that is how an interactive search arrives. hnswlib and faiss are optional (the
`bench` extra); a missing one is reported, not faked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .common import PeakMemory, progress, repeat, stats
from .data import Dataset, recall_at_k

K = 10


def _per_query(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    for q in queries[:3]:  # warm caches and lazily built structures
        search(q)
    timings, answers = [], []
    for q in queries:
        started = time.perf_counter()
        answers.append(search(q))
        timings.append(time.perf_counter() - started)
    return {**stats(timings), "recall": recall_at_k(answers, truth, K)}


def numpy_exact(data: Dataset) -> dict[str, Any]:
    vectors = data.vectors

    def search(q: np.ndarray) -> np.ndarray:
        scores = vectors @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    return {"method": "numpy exact", "setting": "matmul+argpartition", **_per_query(search, data.queries, data.truth)}


def _threads() -> int:
    return os.cpu_count() or 1


def hnswlib_runs(data: Dataset, m: int, ef_construction: int, ef_values: list[int], build_repeats: int) -> tuple[dict, list[dict]]:
    try:
        import hnswlib
    except ImportError:
        return {"method": "hnswlib", "skipped": "hnswlib is not installed (pip install -e '.[bench]')"}, []
    index = None

    def build() -> Any:
        nonlocal index
        index = None
        created = hnswlib.Index(space="ip", dim=data.dim)
        created.init_index(max_elements=data.n, M=m, ef_construction=ef_construction, random_seed=1)
        created.set_num_threads(_threads())
        created.add_items(data.vectors, np.arange(data.n))
        index = created
        return created

    with PeakMemory() as memory:
        timings, index = repeat(build, build_repeats)
    built = {"method": "hnswlib", "setting": f"M={m} ef_construction={ef_construction} threads={_threads()}",
             **stats(timings), "memory_mb": memory.growth_mb}
    progress(f"  hnswlib build {built['median_ms'] / 1000:.1f} s")
    index.set_num_threads(1)
    rows = []
    for ef in ef_values:
        index.set_ef(max(ef, K))
        rows.append({"method": "hnswlib", "setting": f"ef={ef}", "ef": ef,
                     **_per_query(lambda q: index.knn_query(q, k=K)[0][0], data.queries, data.truth)})
    return built, rows


def faiss_runs(data: Dataset, m: int, ef_construction: int, ef_values: list[int], build_repeats: int,
               hnsw: bool = True) -> tuple[list[dict], list[dict]]:
    try:
        import faiss
    except ImportError:
        return [{"method": "faiss", "skipped": "faiss-cpu is not installed (pip install -e '.[bench]')"}], []
    faiss.omp_set_num_threads(_threads())
    builds, rows = [], []

    flat = faiss.IndexFlatIP(data.dim)
    flat.add(data.vectors)
    faiss.omp_set_num_threads(1)  # one query at a time: threads only add overhead
    rows.append({"method": "faiss flat", "setting": "IndexFlatIP",
                 **_per_query(lambda q: flat.search(q[None, :], K)[1][0], data.queries, data.truth)})
    flat.reset()  # free its copy of the vectors before the HNSW build is measured
    faiss.omp_set_num_threads(_threads())
    if not hnsw:
        return builds, rows
    index = None

    def build() -> Any:
        nonlocal index
        index = None
        created = faiss.IndexHNSWFlat(data.dim, m, faiss.METRIC_INNER_PRODUCT)
        created.hnsw.efConstruction = ef_construction
        created.add(data.vectors)
        index = created
        return created

    with PeakMemory() as memory:
        timings, index = repeat(build, build_repeats)
    builds.append({"method": "faiss hnsw", "setting": f"M={m} efConstruction={ef_construction} threads={_threads()}",
                   **stats(timings), "memory_mb": memory.growth_mb})
    progress(f"  faiss hnsw build {builds[-1]['median_ms'] / 1000:.1f} s")
    faiss.omp_set_num_threads(1)
    for ef in ef_values:
        index.hnsw.efSearch = max(ef, K)
        rows.append({"method": "faiss hnsw", "setting": f"ef={ef}", "ef": ef,
                     **_per_query(lambda q: index.search(q[None, :], K)[1][0], data.queries, data.truth)})
    faiss.omp_set_num_threads(_threads())
    return builds, rows
