"""clipsql's benchmark suite: clipsql next to its peers and the machine's limits, in one run.

    python -m bench.suite                       # 25k, 100k and 1M vectors + embedding + refresh (~30-40 min)
    python -m bench.suite --sizes 25k,100k      # a subset of sizes
    python -m bench.suite --smoke               # every code path on tiny data in ~10 s (CI runs this)

For each size N, clustered synthetic 512-d unit vectors (fixed seed) and held-out queries
with exact ground truth; then numpy exact, faiss IndexFlatIP, hnswlib and faiss IndexHNSWFlat
(same M / ef_construction as clipsql's index), and clipsql on chDB through its own code:
bulk load by insert path, load + HNSW build, the bare index query and clipsql's search over
an ef_search sweep, exact scans, IVF-in-SQL over an nprobe sweep, and the
similar_downloads analytics query joined with 1M conversions. The real EfficientNet-Lite0
vectors of the bundled sample images go through the same query comparison. Embedding img/s
(CLIP ViT-B/32 shapes, EfficientNet-Lite0) and refresh wall times complete the run.

Writes bench/results/<name>.json, <name>.md and <name>-*.png (--out to change), and prints a
summary with issue 5's targets marked met or not.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import clipsql_db, limits, peers, report  # noqa: E402
from bench.common import machine, parse_size, progress, size_label  # noqa: E402
from bench.data import Dataset, exact_topk, synthetic  # noqa: E402
from pipeline.load import IndexParams  # noqa: E402

SECTIONS = ("limits", "embedding", "peers", "load", "ivf", "analytics", "real", "refresh")
K = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="25k,100k,1M", help="comma-separated N of synthetic vectors (default 25k,100k,1M)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and counts, tiny CLIP, no refresh: checks every code path in ~10 s")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="output folder (default bench/results)")
    parser.add_argument("--name", help="file stem of the outputs (default suite-<UTC time>, smoke: smoke)")
    parser.add_argument("--queries", type=int, default=100, help="queries per setting (default 100; full scans and analytics use at most 50, 30 at 1M)")
    parser.add_argument("--ef", default="16,32,64,128,256", help="ef_search values to sweep (default 16,32,64,128,256)")
    parser.add_argument("--nprobe", default="1,2,4,8,16,32", help="IVF nprobe values to sweep")
    parser.add_argument("--m", type=int, default=IndexParams.m, help=f"HNSW M for every index (default {IndexParams.m})")
    parser.add_argument("--ef-construction", type=int, default=IndexParams.ef_construction,
                        help=f"HNSW ef_construction for every index (default {IndexParams.ef_construction})")
    parser.add_argument("--quantization", default=IndexParams.quantization,
                        help=f"chDB index quantization (default {IndexParams.quantization})")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of loads and other short timings (default 5)")
    parser.add_argument("--build-repeats", type=int, default=None,
                        help="repeats of each index build (default 3 up to 25k vectors, 1 above: a 1M build takes minutes)")
    parser.add_argument("--faiss-hnsw-max", type=lambda t: 0 if t.strip() == "0" else parse_size(t), default=100_000,
                        help="largest N that also builds faiss IndexHNSWFlat (default 100k: at 1M it is the same graph "
                             "as hnswlib and would add ~8 min; 0 for no limit)")
    parser.add_argument("--load-rows", type=int, default=200_000, help="rows per bulk-load repeat (default 200k)")
    parser.add_argument("--df-rows", type=int, default=20_000, help="rows per insert_df repeat, the slow path (default 20k)")
    parser.add_argument("--conversions", type=int, default=1_000_000, help="synthetic conversions rows (default 1M)")
    parser.add_argument("--embed-images", type=int, default=300, help="sample images to embed (default all 300)")
    parser.add_argument("--embed-device", default="cpu", choices=("cpu", "cuda", "auto"),
                        help="device for the embedding section (default cpu; cuda times the GPU path)")
    parser.add_argument("--skip", default="", help=f"sections to leave out: {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes = "1k"
        args.queries, args.ef, args.nprobe = 10, "64", "4"
        args.repeats, args.build_repeats, args.load_rows, args.df_rows = 2, 1, 1000, 200
        args.conversions, args.embed_images = 10_000, 8
        args.skip = ",".join(filter(None, [args.skip, "refresh"]))
        args.name = args.name or "smoke"
    try:
        args.size_list = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        args.ef_list = [int(x) for x in args.ef.split(",") if x.strip()]
        args.nprobe_list = [int(x) for x in args.nprobe.split(",") if x.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    args.skip_set = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip_set - set(SECTIONS)
    if unknown:
        parser.error(f"--skip: unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    if min(args.queries, args.repeats, *args.ef_list, *args.nprobe_list) < 1:
        parser.error("--queries, --repeats, --ef and --nprobe values must be at least 1")
    return args


def ivf_cells(data: Dataset) -> dict[str, Any] | None:
    """IVF-in-SQL hook: k-means cells from pipeline.ivf when this checkout has it (None otherwise).

    The cells go into the embeddings table's `cell` column and the centroids into ivf_<model>,
    the layout `clipsql search --method ivf` reads; the bench computes them with the project's
    own pipeline.ivf functions so the query path measured is clipsql's.
    """
    try:
        from pipeline import ivf
    except ImportError:
        return None
    if not all(hasattr(ivf, name) for name in ("kmeans", "assign", "default_lists")):
        return None
    started = time.perf_counter()
    lists = ivf.default_lists(data.n)
    centroids = ivf.kmeans(data.vectors, lists)
    cells = ivf.assign(data.vectors, centroids)
    return {"lists": lists, "centroids": centroids, "cells": cells, "train_assign_s": round(time.perf_counter() - started, 3)}


def build_repeats(args: argparse.Namespace, n: int) -> int:
    return args.build_repeats if args.build_repeats is not None else (3 if n <= 25_000 else 1)


def run_dataset(args: argparse.Namespace, data: Dataset, label: str, bench: clipsql_db.ChdbBench | None,
                skipped: list[str]) -> dict[str, Any]:
    params = IndexParams(quantization=args.quantization, m=args.m, ef_construction=args.ef_construction)
    repeats_build = build_repeats(args, data.n)
    out: dict[str, Any] = {"label": label, "name": data.name, "kind": data.kind, "n": data.n, "dim": data.dim,
                           "queries_used": len(data.queries), "queries": [], "builds": [], "notes": []}
    rows = out["queries"]
    started = time.perf_counter()
    progress(f"{label}: {data.n:,} x {data.dim}, {len(data.queries)} queries")
    rows.append(peers.numpy_exact(data))
    if "peers" not in args.skip_set:
        built, sweep = peers.hnswlib_runs(data, args.m, args.ef_construction, args.ef_list, repeats_build)
        (out["builds"] if "skipped" not in built else skipped).append(
            built if "skipped" not in built else f"{label}: {built['skipped']}")
        rows.extend(sweep)
        with_hnsw = not args.faiss_hnsw_max or data.n <= args.faiss_hnsw_max
        if not with_hnsw:
            skipped.append(f"{label}: faiss IndexHNSWFlat not built (N > --faiss-hnsw-max); hnswlib is the HNSW peer")
        builds, sweep = peers.faiss_runs(data, args.m, args.ef_construction, args.ef_list, repeats_build, with_hnsw)
        for b in builds:
            (out["builds"] if "skipped" not in b else skipped).append(b if "skipped" not in b else f"{label}: {b['skipped']}")
        rows.extend(sweep)
    if bench is None:
        return out
    table, model = f"embeddings_bench_{data.name.replace('-', '_')}", f"bench/{data.name}"
    if "load" not in args.skip_set and data.kind == "synthetic":
        out["bulk_load"] = bench.bulk_load(data, args.load_rows, args.df_rows, args.repeats)
    ivf = None
    if "ivf" not in args.skip_set:
        ivf = ivf_cells(data) if "cell" in _embedding_columns(bench) else None
        if ivf is None:
            skipped.append(f"{label}: IVF-in-SQL: pipeline.ivf (kmeans/assign) or the `cell` column is not in this "
                           "checkout; hook: bench.suite.ivf_cells")
        else:
            out["ivf"] = {"lists": ivf["lists"], "train_assign_s": ivf["train_assign_s"]}
    progress(f"  chdb load + build ({params.quantization}, M={params.m}, ef_construction={params.ef_construction})")
    out["searchable"] = bench.load_searchable(data, table, model, params, ivf)
    build = {"method": "chdb hnsw", "setting": f"{params.quantization} M={params.m} ef_construction={params.ef_construction}"}
    first = out["searchable"]["build_s"]
    more = bench.rebuild_index(table, data.dim, params, repeats_build - 1) if repeats_build > 1 else None
    timings_ms = [first * 1000] + ([more["min_ms"], more["median_ms"]] if more else [])
    build.update({"n": repeats_build, "min_ms": round(min(timings_ms), 1),
                  "median_ms": round(float(np.median([first * 1000] + ([more["median_ms"]] * (repeats_build - 1) if more else []))), 1),
                  "memory_mb": out["searchable"]["build_memory_mb"], "index_mb": round(out["searchable"]["index_bytes"] / 2**20, 1)})
    out["builds"].insert(0, build)
    progress(f"  chdb build {first:.1f} s (first of {repeats_build}); load {out['searchable']['load_s']:.1f} s")
    bench.photos(data.ids)
    out["select_1"] = bench.select_one()
    out["bind_vector"] = bench.bind_vector(data)
    out["uses_index"] = bench.uses_index(table, data)
    if not out["uses_index"]:
        out["notes"].append("EXPLAIN did not show the vector index being used by the bare ORDER BY ... LIMIT query")
    for ef in args.ef_list:
        raw = bench.timed_queries(bench.raw(table, {"hnsw_candidate_list_size_for_search": ef}), data, args.queries)
        rows.append({"method": "chdb hnsw (raw)", "setting": f"ef={ef}", "ef": ef, **raw})
        search = bench.clipsql_search(table, model, data.dim, "hnsw", ef=ef)
        if search is not None:
            measured = limits_safe(lambda search=search: bench.timed_queries(search, data, args.queries), skipped,
                                   f"{label}: clipsql hnsw ef={ef}")
            if measured:
                rows.append({"method": "clipsql hnsw", "setting": f"ef={ef}", "ef": ef, **measured})
    middle = args.ef_list[len(args.ef_list) // 2]
    rows.append({"method": "chdb hnsw (raw, selecting the vector)", "setting": f"ef={middle}", **bench.timed_queries(
        bench.raw(table, {"hnsw_candidate_list_size_for_search": middle}, clipsql_db.RAW_KNN_WITH_VECTOR), data,
        args.queries)})
    rows.append({"method": "chdb hnsw (raw, vector as 9-digit text)", "setting": f"ef={middle}", **bench.timed_queries(
        bench.raw(table, {"hnsw_candidate_list_size_for_search": middle}, compact=True), data, args.queries)})
    progress(f"  chdb hnsw sweep done ({time.perf_counter() - started:.0f} s into {label})")
    exact_queries = min(args.queries, 30 if data.n >= 1_000_000 else 50)  # full scans: fewer at 1M
    rows.append({"method": "chdb exact (raw)", "setting": "use_skip_indexes=0",
                 **bench.timed_queries(bench.raw(table, {"use_skip_indexes": 0}), data, exact_queries)})
    rows.append({"method": "chdb exact (mmap, no checksum)", "setting": "use_skip_indexes=0 + " + ", ".join(
        f"{k}={v}" for k, v in clipsql_db.EXACT_READ_SETTINGS.items()),
        **bench.timed_queries(bench.raw(table, {"use_skip_indexes": 0, **clipsql_db.EXACT_READ_SETTINGS}), data,
                              exact_queries)})
    exact = bench.clipsql_search(table, model, data.dim, "exact")
    measured = exact and limits_safe(lambda: bench.timed_queries(exact, data, exact_queries), skipped,
                                     f"{label}: clipsql exact")
    if measured:
        rows.append({"method": "clipsql exact", "setting": "--method exact", **measured})
    if ivf is not None:
        for nprobe in [p for p in args.nprobe_list if p <= ivf["lists"]]:
            search = bench.clipsql_search(table, model, data.dim, "ivf", nprobe=nprobe)
            if search is None:
                skipped.append(f"{label}: IVF search: this checkout's pipeline.search has no IVF method")
                break
            measured = limits_safe(lambda search=search: bench.timed_queries(search, data, args.queries), skipped,
                                   f"{label}: clipsql ivf nprobe={nprobe}")
            if measured:
                rows.append({"method": "clipsql ivf", "setting": f"nprobe={nprobe}/{ivf['lists']}", "nprobe": nprobe,
                             **measured})
    if "analytics" not in args.skip_set and data.kind == "synthetic":
        progress(f"  analytics: similar_downloads over {args.conversions:,} conversions")
        analytics = limits_safe(lambda: bench.analytics(data, table, model, args.conversions, exact_queries),
                                skipped, f"{label}: analytics")
        if analytics:
            out["analytics"] = analytics
    bench.drop(table, "ivf_" + table.removeprefix("embeddings_"), "photos", "conversions")
    bench.db.command("ALTER TABLE models DELETE WHERE model = {m:String}", {"m": model}, settings={"mutations_sync": 2})
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    progress(f"{label} done in {out['elapsed_s']} s")
    return out


def _embedding_columns(bench: clipsql_db.ChdbBench) -> list[str]:
    bench.create_embeddings("bench_probe", 4)
    columns = bench.columns("bench_probe")
    bench.drop("bench_probe")
    return columns


def real_dataset(vectors_table: Any, queries: int) -> Dataset | None:
    """The EfficientNet-Lite0 vectors of the sample images; queries are the first stored vectors."""
    if vectors_table is None or vectors_table.num_rows < 2 * K:
        return None
    vectors = np.array(vectors_table["embedding"].to_pylist(), dtype=np.float32)
    ids = [f"r{i:08d}" for i in range(len(vectors))]
    q = vectors[:min(queries, len(vectors))]
    return Dataset("sample-efficientnet", vectors, q, exact_topk(vectors, q, K), ids, kind="real images")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    stem = args.name or time.strftime("suite-%Y%m%dT%H%M%SZ", time.gmtime())
    result: dict[str, Any] = {
        "run": {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": "python -m bench.suite " + " ".join(argv if argv is not None else sys.argv[1:]),
                "machine": machine(), "k": K, "smoke": args.smoke, "sizes": args.size_list,
                "index": {"quantization": args.quantization, "m": args.m, "ef_construction": args.ef_construction}},
        "datasets": [], "skipped": [],
    }
    work = Path(tempfile.mkdtemp(prefix="clipsql-bench-"))
    try:
        if "limits" not in args.skip_set:
            progress("machine limits: memory bandwidth, sgemm")
            result["limits"] = {"memory": limits.memory_bandwidth(128 if args.smoke else 1024, args.repeats),
                                "sgemm": limits.sgemm(512 if args.smoke else 2048, args.repeats)}
        real_vectors = None
        if "embedding" not in args.skip_set:
            progress(f"embedding {args.embed_images} sample images")
            embedding = limits_safe(lambda: _embedding(work, args), result["skipped"], "embedding")
            if embedding:
                real_vectors = embedding.pop("_real_vectors", None)
                result["embedding"] = embedding
        bench = clipsql_db.ChdbBench(work / "clickhouse")
        try:
            for n in args.size_list:
                data = synthetic(n, args.queries, K)
                entry = run_dataset(args, data, size_label(n), bench, result["skipped"])
                entry["ratios"] = report.ratios(entry, result.get("limits", {}))
                result["datasets"].append(entry)
                del data
            if "real" not in args.skip_set:
                real = real_dataset(real_vectors, min(args.queries, 30))
                if real is None:
                    result["skipped"].append("real vectors: the embedding section did not run or gave too few vectors")
                else:
                    entry = run_dataset(args, real, "sample images (EfficientNet-Lite0)", bench, result["skipped"])
                    entry["ratios"] = report.ratios(entry, result.get("limits", {}))
                    result["datasets"].append(entry)
        finally:
            bench.close()
        if "refresh" not in args.skip_set:
            from bench import refresh_sample, refresh_scale

            progress("refresh: the bundled sample (no-op, +10%)")
            result["refresh"] = {"sample_300": limits_safe(refresh_sample.measure, result["skipped"], "refresh sample")}
            progress("refresh: 25k photos from an hf:/local/dir release (no-op, +10%)")
            result["refresh"]["hf_25k"] = limits_safe(refresh_scale.measure, result["skipped"], "refresh 25k")
            for value in result["refresh"].values():
                if isinstance(value, dict):
                    value.pop("last_embed_report", None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["run"]["elapsed_s"] = round(time.perf_counter() - began, 1)
    result["targets"] = report.targets(result)
    files = report.write(result, args.out, stem)
    print(report.summary(result))
    print("wrote " + ", ".join(files.values()))
    failed = [s for s in result["skipped"] if ": failed: " in s]
    if failed:
        print(f"{len(failed)} measurement(s) failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def _embedding(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from bench import embedding

    return embedding.measure(work / "embedding", args.embed_images, args.smoke, args.repeats, args.embed_device)


def limits_safe(fn: Any, skipped: list[str], name: str) -> Any:
    """Run one measurement; a failure is recorded in the results and printed, the others still run,
    and the suite exits non-zero at the end."""
    try:
        return fn()
    except Exception as exc:  # a section failing must not lose the figures of the others
        message = f"{name}: failed: {type(exc).__name__}: {str(exc)[:300]}"
        progress(message)
        skipped.append(message)
        return None


if __name__ == "__main__":
    sys.exit(main())
