"""The benchmark suite: its smoke run writes its JSON, Markdown and PNG files with sane figures,
and the helpers it scores everything with agree with brute force."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import report
from bench.clipsql_db import compact_vector
from bench.common import parse_size, size_label, stats
from bench.data import clustered, exact_topk, recall_at_k

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "bench.suite", "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "smoke.json").read_text()), out, done


def test_smoke_run_writes_json_markdown_and_plots(smoke) -> None:
    result, out, done = smoke
    assert (out / "smoke.md").read_text().startswith("# clipsql benchmark")
    plots = sorted(out.glob("smoke-*.png"))
    if _have("matplotlib"):
        assert [p.name for p in plots] == ["smoke-by-n.png", "smoke-recall-latency.png"]
        for plot in plots:
            assert plot.read_bytes()[:8] == PNG_MAGIC and plot.stat().st_size > 5000
            assert f"]({plot.name})" in (out / "smoke.md").read_text()
    assert "wrote " in done.stdout and str(out / "smoke.json") in done.stdout
    assert "[bench" in done.stderr  # progress goes to stderr


def test_smoke_figures_are_measured_and_scored(smoke) -> None:
    result, _, _ = smoke
    (data,) = [d for d in result["datasets"] if d["kind"] == "synthetic"]
    assert data["n"] == 1000 and data["dim"] == 512
    rows = {(r["method"], r.get("setting")): r for r in data["queries"]}
    methods = {m for m, _ in rows}
    expected = {"numpy exact", "chdb hnsw (raw)", "clipsql hnsw", "chdb exact (raw)", "chdb exact (mmap, no checksum)",
                "clipsql exact"}
    if _have("hnswlib"):
        expected.add("hnswlib")
    if _have("faiss"):
        expected |= {"faiss flat", "faiss hnsw"}
    assert expected <= methods
    for row in data["queries"]:
        assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p95_ms"]
        assert row["n"] == 10
    # Exact methods must find exactly numpy's ground truth: an independent check of the scoring and of chDB.
    for method in ("numpy exact", "chdb exact (raw)", "chdb exact (mmap, no checksum)", "clipsql exact"):
        assert rows[(method, next(s for m, s in rows if m == method))]["recall"] == 1.0, method
    assert data["uses_index"] is True
    assert data["searchable"]["index_bytes"] > 0
    assert {b["path"] for b in data["bulk_load"]} == {"pipeline.load._insert", "insert_arrow", "Python() table function",
                                                     "insert_df (list column)"}
    assert all(b["rows_per_s"] > 0 for b in data["bulk_load"])
    assert data["analytics"]["rows_checked_against_numpy"] == 10 * 10  # 10 queries x k=10 rows
    assert result["limits"]["memory"]["read_gb_s"] > 0 and result["limits"]["sgemm"]["gflop_s"] > 0
    clip = result["embedding"]["clip-tiny (smoke)"]
    assert clip["images_per_s"] > 0 and result["embedding"]["efficientnet-lite0"]["images_per_s"] > 0
    assert result["targets"] == []  # no target is judged on smoke-sized data
    assert not any("failed" in s for s in result["skipped"]), result["skipped"]


def test_exact_topk_matches_a_full_sort() -> None:
    vectors, queries = clustered(3000, 25, dim=16, clusters=20, seed=5)
    got = exact_topk(vectors, queries, 10, block=700)  # blocks that do not divide the data
    scores = queries @ vectors.T
    want = np.array([np.lexsort((np.arange(len(row)), -row))[:10] for row in scores])
    assert np.array_equal(got, want)
    assert recall_at_k(got, want, 10) == 1.0
    assert recall_at_k(got[:, ::-1], want, 10) == 1.0  # order inside the top-k does not matter
    half = np.concatenate([got[:, :5], np.full((25, 5), -1)], axis=1)
    assert recall_at_k(half, want, 10) == 0.5


def test_clustered_vectors_are_unit_deterministic_and_clustered() -> None:
    a, qa = clustered(500, 10, dim=32, clusters=5, seed=1)
    b, qb = clustered(500, 10, dim=32, clusters=5, seed=1)
    assert np.array_equal(a, b) and np.array_equal(qa, qb)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    nearest = np.sort(qa @ a.T, axis=1)[:, -10:].mean()
    typical = np.median(qa @ a.T)
    assert nearest > typical + 0.3  # neighbourhoods exist, unlike uniformly random vectors


def test_stats_sizes_and_target_checks() -> None:
    timings = [0.004, 0.001, 0.002, 0.003, 0.010]
    s = stats(timings)
    assert s["min_ms"] == 1.0 and s["median_ms"] == 3.0 and s["p95_ms"] == pytest.approx(np.percentile([4, 1, 2, 3, 10], 95))
    assert [parse_size(x) for x in ("25k", "100K", "1M", "2000")] == [25_000, 100_000, 1_000_000, 2000]
    assert [size_label(n) for n in (25_000, 1_000_000, 1234)] == ["25k", "1M", "1234"]
    with pytest.raises(ValueError):
        parse_size("lots")
    data = {"kind": "synthetic", "n": 25_000, "label": "25k", "dim": 512, "queries": [
        {"method": "chdb hnsw (raw)", "setting": "ef=16", "ef": 16, "p50_ms": 2.0, "recall": 0.97},
        {"method": "chdb hnsw (raw)", "setting": "ef=64", "ef": 64, "p50_ms": 2.8, "recall": 0.995},
        {"method": "clipsql hnsw", "setting": "ef=64", "ef": 64, "p50_ms": 9.0, "recall": 0.995},
        {"method": "hnswlib", "setting": "ef=64", "ef": 64, "p50_ms": 0.4, "recall": 0.999},
        {"method": "numpy exact", "setting": "", "p50_ms": 1.0, "recall": 1.0},
        {"method": "chdb exact (raw)", "setting": "", "p50_ms": 8.0, "recall": 1.0}],
        "builds": [{"method": "chdb hnsw", "median_ms": 6000, "min_ms": 5000},
                   {"method": "hnswlib", "median_ms": 5000, "min_ms": 5000}],
        "searchable": {"load_plus_build_s": 7.5}}
    data["ratios"] = report.ratios(data, {"memory": {"read_gb_s": 20.0}})
    assert data["ratios"]["chdb exact (raw) / numpy exact, p50"] == 8.0
    assert data["ratios"]["chdb build / hnswlib build (median)"] == 1.2
    assert data["ratios"]["chdb hnsw (raw) / hnswlib p50 at ef=64"] == 7.0
    checks = {c["target"]: c["met"] for c in report.targets({"datasets": [data]})}
    assert checks["chdb hnsw (raw) kNN p50 at 25k, recall >= 0.99"] is True  # ef=64 is the fastest that qualifies
    assert checks["clipsql hnsw kNN p50 at 25k, recall >= 0.99"] is False
    assert checks["index build vs hnswlib at 25k"] is True
    assert checks["chdb exact (raw) p50 at 25k"] is True
    assert checks["load + index build at 25k"] is True


def test_compact_vector_text_round_trips_float32_exactly() -> None:
    rng = np.random.default_rng(11)
    q = rng.standard_normal(512).astype(np.float32)
    q[:4] = [np.float32(1e-38), np.float32(-3.4e38), np.float32(1 / 3), np.float32(0.0)]
    text = compact_vector(q)
    assert text.startswith("[") and text.endswith("]")
    back = np.array([float(x) for x in text[1:-1].split(",")], dtype=np.float32)
    assert back.tobytes() == q.tobytes()
    assert len(text) < len(str(q.tolist()))
