"""`clipsql verify`: how much the approximate plans miss, measured on the user's own data.

A fixed-seed sample of stored vectors serves as queries; each is answered by a full scan (the
truth) and by every approximate plan asked for, with the same metric, k and exclusion as a
`search --photo-id`. Reported per plan: mean and worst recall@k, p50/p95 latency. A mean recall
below the threshold is a failure, so a cron job or CI can catch an index that went bad.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
from tqdm import tqdm

from .db import Database
from .errors import ClipsqlError, UsageError
from .search import LoadedModel, SearchOptions, choose_method, nearest


class RecallTooLow(ClipsqlError):
    """An approximate plan's recall is below the threshold the user set."""

    exit_code = 1


def sample_queries(db: Database, model: LoadedModel, count: int, seed: int) -> list[tuple[str, np.ndarray]]:
    rows = db.query_rows(db.sql("search/sample_vectors.sql").text,
                         {"table": model.table, "seed": seed, "n": count})
    return [(photo_id, np.asarray(vector, dtype=np.float32)) for photo_id, vector in rows]


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else 0.0


def verify(db: Database, model: LoadedModel, *, methods: list[str], queries: int = 100, options: SearchOptions,
           seed: int = 0) -> list[dict[str, Any]]:
    """One row per plan (exact first): recall@k against the exact answers, and latency."""
    if queries <= 0:
        raise UsageError(f"--queries must be at least 1, got {queries}")
    for method in methods:
        choose_method(db, model, method)  # a clear error now if the index or the cells are missing
    sample = sample_queries(db, model, queries, seed)
    if not sample:
        raise UsageError(f"model {model.name} has no vectors to sample queries from")
    plans = ["exact", *[m for m in methods if m != "exact"]]
    latencies: dict[str, list[float]] = {plan: [] for plan in plans}
    recalls: dict[str, list[float]] = {plan: [] for plan in plans}
    for photo_id, vector in tqdm(sample, desc="verify", unit="query", disable=None, leave=False):
        truth: set[str] = set()
        for plan in plans:
            started = time.perf_counter()
            result = nearest(db, model, vector, replace(options, method=plan, exclude=photo_id))
            latencies[plan].append(time.perf_counter() - started)
            found = {row["photo_id"] for row in result.rows}
            if plan == "exact":
                truth = found
            recalls[plan].append(len(found & truth) / len(truth) if truth else 1.0)
    rows = []
    for plan in plans:
        setting = {"hnsw": f"ef_search={options.ef_search or 'default'}",
                   "ivf": f"nprobe={options.nprobe or 'default'}"}.get(plan, "full scan")
        rows.append({"method": plan, "setting": setting, "queries": len(sample), "k": options.k,
                     "recall": round(float(np.mean(recalls[plan])), 4),
                     "worst_recall": round(float(np.min(recalls[plan])), 4),
                     "p50_ms": _percentile(latencies[plan], 50), "p95_ms": _percentile(latencies[plan], 95)})
    return rows


def check_threshold(rows: list[dict[str, Any]], min_recall: float) -> None:
    low = [row for row in rows if row["recall"] < min_recall]
    if low:
        worst = ", ".join(f"{row['method']} {row['recall']:.3f}" for row in low)
        raise RecallTooLow(f"recall@{rows[0]['k']} below {min_recall}: {worst}")
