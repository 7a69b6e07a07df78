"""What a run leaves behind: the JSON of every figure, a Markdown table, PNG plots, a summary.

Ratios are computed here, from figures of the same run only: clipsql's HNSW query against
hnswlib's at the same ef_search, its exact scan against numpy's, its index build against
hnswlib's with the same M and ef_construction, its scan rate against the machine's memory
bandwidth. The targets of issue 5 are checked against the same figures and marked met or not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGETS = {  # size -> (p50 ms, recall) for kNN top-10 through the HNSW index
    25_000: (3.0, 0.99),
    100_000: (4.0, 0.98),
    1_000_000: (10.0, 0.95),
}


def _row(rows: list[dict], method: str, setting: str | None = None) -> dict | None:
    for row in rows:
        if row.get("method") == method and (setting is None or row.get("setting") == setting):
            return row
    return None


def _best_at_recall(rows: list[dict], method: str, recall: float) -> dict | None:
    """The fastest setting of `method` that reaches `recall`."""
    ok = [r for r in rows if r.get("method") == method and r.get("recall", 0) >= recall]
    return min(ok, key=lambda r: r["p50_ms"]) if ok else None


def ratios(dataset: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
    rows = dataset.get("queries", [])
    out: dict[str, Any] = {}
    numpy_row = _row(rows, "numpy exact")
    for method in ("chdb exact (raw)", "chdb exact (mmap, no checksum)", "clipsql exact"):
        row = _row(rows, method)
        if row and numpy_row:
            out[f"{method} / numpy exact, p50"] = round(row["p50_ms"] / numpy_row["p50_ms"], 2)
    exact = _row(rows, "chdb exact (mmap, no checksum)") or _row(rows, "chdb exact (raw)")
    bandwidth = limits.get("memory", {}).get("read_gb_s")
    if exact and bandwidth:
        scanned_gb = dataset["n"] * dataset["dim"] * 4 / 1e9
        out["chdb exact scan GB/s"] = round(scanned_gb / (exact["p50_ms"] / 1000), 2)
        out["chdb exact scan / memory read bandwidth"] = round(out["chdb exact scan GB/s"] / bandwidth, 3)
    for method in ("chdb hnsw (raw)", "clipsql hnsw"):
        for row in rows:
            if row.get("method") != method or "ef" not in row:
                continue
            peer = next((r for r in rows if r.get("method") == "hnswlib" and r.get("ef") == row["ef"]), None)
            if peer:
                out[f"{method} / hnswlib p50 at ef={row['ef']}"] = round(row["p50_ms"] / peer["p50_ms"], 1)
    builds = {b["method"]: b for b in dataset.get("builds", []) if "median_ms" in b}
    if "chdb hnsw" in builds and "hnswlib" in builds:
        out["chdb build / hnswlib build (median)"] = round(builds["chdb hnsw"]["median_ms"] / builds["hnswlib"]["median_ms"], 2)
        out["chdb build / hnswlib build (min)"] = round(builds["chdb hnsw"]["min_ms"] / builds["hnswlib"]["min_ms"], 2)
    select_one, bind = dataset.get("select_1"), dataset.get("bind_vector")
    raw = _best_at_recall(rows, "chdb hnsw (raw)", 0.0)
    if select_one and raw:
        out["SELECT 1 p50 ms (per-query floor)"] = select_one["p50_ms"]
        out["SELECT 1 share of fastest raw HNSW query"] = round(select_one["p50_ms"] / raw["p50_ms"], 2)
    if bind and select_one and raw:
        out["binding the 512-float vector, ms (SELECT length(q) - SELECT 1)"] = round(bind["p50_ms"] - select_one["p50_ms"], 3)
        out["binding share of fastest raw HNSW query"] = round((bind["p50_ms"] - select_one["p50_ms"]) / raw["p50_ms"], 2)
    return out


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 5's targets, each with the measured figure and whether it is met."""
    checks: list[dict[str, Any]] = []

    def add(name: str, measured: Any, goal: str, met: bool | None) -> None:
        checks.append({"target": name, "measured": measured, "goal": goal, "met": met})

    for data in result.get("datasets", []):
        if data.get("kind") != "synthetic":
            continue
        n, rows = data["n"], data.get("queries", [])
        if n in TARGETS:
            p50, recall = TARGETS[n]
            for method in ("chdb hnsw (raw)", "clipsql hnsw"):
                best = _best_at_recall(rows, method, recall)
                top = max((r for r in rows if r.get("method") == method), key=lambda r: r.get("recall", 0), default=None)
                if best:
                    measured = f"{best['p50_ms']} ms ({best['setting']}, recall {best['recall']})"
                elif top:
                    measured = f"recall not reached: best {top['recall']} ({top['setting']}, {top['p50_ms']} ms)"
                else:
                    continue
                add(f"{method} kNN p50 at {data['label']}, recall >= {recall}", measured, f"<= {p50} ms",
                    bool(best and best["p50_ms"] <= p50))
        if n < 25_000:
            continue  # smoke-sized data: start-up costs dominate, a target check would mislead
        ratio = data.get("ratios", {})
        if "chdb build / hnswlib build (median)" in ratio:
            add(f"index build vs hnswlib at {data['label']}", ratio["chdb build / hnswlib build (median)"], "<= 1.5x",
                ratio["chdb build / hnswlib build (median)"] <= 1.5)
        key = "chdb exact (raw) / numpy exact, p50"
        if key in ratio and n >= 100_000:
            add(f"exact scan vs numpy at {data['label']} (as clipsql runs it)", ratio[key], "<= 3x", ratio[key] <= 3)
        tuned = "chdb exact (mmap, no checksum) / numpy exact, p50"
        if tuned in ratio and n >= 100_000:
            add(f"exact scan vs numpy at {data['label']} (mmap, no checksum)", ratio[tuned], "<= 3x", ratio[tuned] <= 3)
        if n == 25_000:
            for method in ("chdb exact (raw)", "chdb exact (mmap, no checksum)"):
                row = _row(rows, method)
                if row:
                    add(f"{method} p50 at 25k", row["p50_ms"], "<= 10 ms", row["p50_ms"] <= 10)
            searchable = data.get("searchable", {})
            if searchable:
                add("load + index build at 25k", searchable["load_plus_build_s"], "<= 10 s",
                    searchable["load_plus_build_s"] <= 10)
        best_load = max((r for r in data.get("bulk_load", []) if r["path"] == "pipeline.load._insert"),
                        key=lambda r: r["rows_per_s_median"], default=None)
        if best_load:
            add(f"bulk load (pipeline.load._insert) at {data['label']}", best_load["rows_per_s_median"],
                ">= 200000 rows/s", best_load["rows_per_s_median"] >= 200_000)
        analytics = data.get("analytics", {}).get("queries/similar_downloads.sql")
        if analytics and data["analytics"]["conversions"] >= 1_000_000:
            add(f"analytics join (top-10 x {data['analytics']['conversions']:,} conversions) at {data['label']}",
                analytics["p50_ms"], "<= 50 ms", analytics["p50_ms"] <= 50)
    embedding = result.get("embedding", {})
    for name, row in embedding.items():
        if name.startswith("clip-vit-b32") and isinstance(row, dict):
            add("CLIP ViT-B/32 shapes on CPU through pipeline.embed", row["images_per_s"], ">= 25 img/s",
                row["images_per_s"] >= 25)
    refresh = result.get("refresh", {})
    if "hf_25k" in refresh and "noop_refresh_s" in refresh["hf_25k"]:
        add("no-op refresh at 25k", refresh["hf_25k"]["noop_refresh_s"], "<= 5 s", refresh["hf_25k"]["noop_refresh_s"] <= 5)
    return checks


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def markdown(result: dict[str, Any], plots: list[str]) -> str:
    run = result["run"]
    limits = result.get("limits", {})
    lines = [f"# clipsql benchmark: {run['started_at']}", "",
             f"`{run['command']}` on {run['machine']['cpu']}, {run['machine']['cpu_count']} cores "
             f"(load average at start {run['machine'].get('loadavg_at_start')}); {run['elapsed_s']} s in all. "
             "Latencies are per query (one at a time), p50/p95 over the queries; builds and loads are "
             "min/median of repeats. Ratios compare figures of this run only.", ""]
    if limits:
        memory, gemm = limits.get("memory", {}), limits.get("sgemm", {})
        lines += ["## Machine limits", ""] + _table(
            ["memory read GB/s", "memory copy GB/s", "sgemm GFLOP/s (float32)"],
            [[memory.get("read_gb_s"), memory.get("copy_gb_s"), gemm.get("gflop_s")]])
    checks = result.get("targets", [])
    if checks:
        lines += ["## Targets (issue 5)", ""] + _table(
            ["target", "measured", "goal", "met"],
            [[c["target"], c["measured"], c["goal"], {True: "yes", False: "**no**", None: "-"}[c["met"]]] for c in checks])
    for data in result.get("datasets", []):
        lines += [f"## {data['label']}: {data['n']:,} x {data['dim']} ({data['kind']})", ""]
        lines += _table(["method", "setting", "p50 ms", "p95 ms", "min ms", f"recall@{result['run']['k']}", "queries"],
                        [[r["method"], r.get("setting", ""), r["p50_ms"], r["p95_ms"], r["min_ms"], r.get("recall"), r["n"]]
                         for r in data.get("queries", []) if "p50_ms" in r])
        if data.get("builds"):
            lines += _table(["index build", "setting", "median s", "min s", "repeats", "memory MB"],
                            [[b["method"], b.get("setting", ""), b["median_ms"] / 1000, b["min_ms"] / 1000, b["n"],
                              b.get("memory_mb")] for b in data["builds"] if "median_ms" in b])
        if data.get("bulk_load"):
            lines += _table(["insert path", "rows", "rows/s (median)", "rows/s (best)", "MB/s (best)"],
                            [[r["path"], r["rows"], r["rows_per_s_median"], r["rows_per_s"], r["mb_per_s"]]
                             for r in data["bulk_load"]])
        if data.get("searchable"):
            s = data["searchable"]
            lines += [f"Load through `pipeline.load._insert` then `build_vector_index`: {s['load_s']} s + "
                      f"{s['build_s']} s = {s['load_plus_build_s']} s; index {s['index_bytes'] / 2**20:.1f} MB on disk, "
                      f"build memory growth {s['build_memory_mb']} MB.", ""]
        if data.get("analytics"):
            a = data["analytics"]
            lines += _table(["analytics (top-10 joined with conversions)", "p50 ms", "p95 ms", "min ms"],
                            [[name, v["p50_ms"], v["p95_ms"], v["min_ms"]] for name, v in a.items()
                             if isinstance(v, dict)])
        if data.get("ratios"):
            lines += _table(["ratio", "value"], [[k, v] for k, v in data["ratios"].items()])
        if data.get("notes"):
            lines += [f"- {note}" for note in data["notes"]] + [""]
    embedding = {k: v for k, v in result.get("embedding", {}).items() if isinstance(v, dict)}
    if embedding:
        lines += ["## Embedding on CPU (through pipeline.embed, decode overlapped)", ""]
        lines += _table(["model", "img/s (pipeline)", "model-only img/s", "bf16 autocast", "model load s"],
                        [[name, row["images_per_s"],
                          row.get("model_only_images_per_s") or
                          f"fp32 {row.get('model_only_fp32_images_per_s')}, bf16 {row.get('model_only_bf16_images_per_s')}",
                          row.get("cpu_bf16_autocast", "-"), row["model_load_s"]] for name, row in embedding.items()])
    refresh = result.get("refresh", {})
    if refresh:
        lines += ["## Refresh wall time", ""]
        lines += _table(["data", "initial run s", "no-op refresh s", "+10% refresh s", "no-op after s"],
                        [[name, r.get("initial_run_s"), r.get("noop_refresh_s"), r.get("refresh_plus_10pct_s"),
                          r.get("noop_refresh_after_s")] for name, r in refresh.items() if isinstance(r, dict)])
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    if result.get("skipped"):
        lines += ["## Not measured", ""] + [f"- {s}" for s in result["skipped"]] + [""]
    return "\n".join(lines)


def plot(result: dict[str, Any], out_dir: Path, stem: str) -> list[str]:
    """recall vs p50 latency per dataset, and query/build/load figures by N. Returns the PNG paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        result.setdefault("skipped", []).append("plots: matplotlib is not installed (pip install -e '.[bench]')")
        return []
    paths = []
    datasets = result.get("datasets", [])
    if datasets:
        all_methods = list(dict.fromkeys(r["method"] for d in datasets for r in d.get("queries", [])))
        colors = plt.get_cmap("tab20")
        fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 5.2), squeeze=False)
        for ax, data in zip(axes[0], datasets, strict=True):
            methods: dict[str, list[dict]] = {}
            for row in data.get("queries", []):
                if "p50_ms" in row and row.get("recall") is not None:
                    methods.setdefault(row["method"], []).append(row)
            for method, rows in methods.items():
                rows = sorted(rows, key=lambda r: r["p50_ms"])
                number = all_methods.index(method)
                ax.plot([r["p50_ms"] for r in rows], [r["recall"] for r in rows], "-" if len(rows) > 1 else "",
                        marker="os^vDP*Xhp<>"[number % 12], color=colors(number % 20), label=method, markersize=5)
            ax.set_xscale("log")
            ax.set_xlabel("p50 latency per query (ms, log)")
            ax.set_ylabel(f"recall@{result['run']['k']}")
            ax.set_title(f"{data['label']} ({data['n']:,} x {data['dim']})")
            ax.grid(True, which="both", alpha=0.3)
        handles: dict = {}
        for ax in axes[0]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        fig.legend(list(handles.values()), list(handles), fontsize=7, loc="lower center", ncol=4)
        fig.tight_layout(rect=(0, 0.16, 1, 1))
        path = out_dir / f"{stem}-recall-latency.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(str(path))
    synthetic = [d for d in datasets if d.get("kind") == "synthetic"]
    if synthetic:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        ns = [d["n"] for d in synthetic]
        for method in ("numpy exact", "faiss flat", "chdb exact (raw)", "chdb exact (mmap, no checksum)"):
            ys = [(_row(d["queries"], method) or {}).get("p50_ms") for d in synthetic]
            if any(y is not None for y in ys):
                axes[0].plot(ns, ys, "o-", label=method)
        for method in ("hnswlib", "faiss hnsw", "chdb hnsw (raw)", "clipsql hnsw"):
            ys = [(_best_at_recall(d["queries"], method, 0.95) or {}).get("p50_ms") for d in synthetic]
            if any(y is not None for y in ys):
                axes[0].plot(ns, ys, "o--", label=f"{method} (fastest at recall>=0.95)")
        axes[0].set_title("query p50 by N")
        axes[0].set_ylabel("ms")
        for method in ("chdb hnsw", "hnswlib", "faiss hnsw"):
            ys = [next((b["median_ms"] / 1000 for b in d.get("builds", []) if b["method"] == method and "median_ms" in b),
                       None) for d in synthetic]
            if any(y is not None for y in ys):
                axes[1].plot(ns, ys, "o-", label=method)
        axes[1].set_title("index build by N")
        axes[1].set_ylabel("s")
        paths_seen = sorted({r["path"] for d in synthetic for r in d.get("bulk_load", [])})
        for name in paths_seen:
            ys = [next((r["rows_per_s_median"] for r in d.get("bulk_load", []) if r["path"] == name), None)
                  for d in synthetic]
            axes[2].plot(ns, ys, "o-", label=name)
        axes[2].set_title("bulk load rows/s by N")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("N vectors")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{stem}-by-n.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(str(path))
    return paths


def summary(result: dict[str, Any]) -> str:
    lines = []
    for data in result.get("datasets", []):
        rows = data.get("queries", [])
        best = _best_at_recall(rows, "clipsql hnsw", 0.95) or _best_at_recall(rows, "chdb hnsw (raw)", 0.0)
        numpy_row = _row(rows, "numpy exact")
        part = f"{data['label']}: "
        if best:
            part += f"{best['method']} {best['p50_ms']} ms p50 at recall {best['recall']} ({best['setting']})"
        if numpy_row:
            part += f"; numpy exact {numpy_row['p50_ms']} ms"
        lines.append(part)
    for check in result.get("targets", []):
        mark = {True: "met", False: "NOT met", None: "?"}[check["met"]]
        lines.append(f"  [{mark}] {check['target']}: {check['measured']} (goal {check['goal']})")
    return "\n".join(lines)


def write(result: dict[str, Any], out_dir: Path, stem: str) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot(result, out_dir, stem)
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    result["files"] = {"json": str(json_path), "markdown": str(md_path), "plots": plots}
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md_path.write_text(markdown(result, plots))
    return {"json": str(json_path), "markdown": str(md_path), **{f"plot{i}": p for i, p in enumerate(plots)}}
