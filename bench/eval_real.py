"""Retrieval quality of every encoder on real, offline, labelled image sets.

Sets (Debian packages, `apt-get install --no-install-recommends openclipart-png
tuxpaint-stamps-default dataset-fashion-mnist`):

- openclipart: /usr/share/openclipart/png, one class per top-level category folder;
- tuxpaint:    /usr/share/tuxpaint/stamps, one class per top-level category (PNG stamps only);
- fashion:     /usr/share/datasets/fashion-mnist, the first N images of the test split.

For the folder sets a balanced subset is drawn (seeded): categories with at least --per-class
regular PNG files (Debian's symlinked duplicates left out; "unsorted"-style folders too), that
many images each, linked into a class-folder tree. Then, with the real CLI in subprocesses:

    clipsql extract --source folder:SUBSET            (or idx:SUBSET)
    clipsql embed --model M                           for efficientnet-lite0, color-histogram, pixels, phash
    clipsql train pca|autoencoder --holdout 0.5       fitted on the other half only
    clipsql train triplet --base efficientnet-lite0 --holdout 0.5 [--mining random]
    clipsql eval --holdout 0.5 --per-class            leave-one-out on the held-out half
    clipsql load; clipsql eval --index ...            the same through the HNSW index (efficientnet)

so every model is measured on the same held-out photos that no trained model saw. CLIP needs
Hub weights (not reachable here); it is added when `openai/clip-vit-base-patch32` is in the
local HuggingFace cache. Writes bench/results/eval-<set>.json and .png, and eval-real.md.

    python bench/eval_real.py                       # all three sets, default sizes
    python bench/eval_real.py --sets tuxpaint --per-class 20
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import DEFAULT_MODEL  # noqa: E402
from pipeline.encoders import clip_weights_available  # noqa: E402

RESULTS = ROOT / "bench" / "results"
OPENCLIPART = Path("/usr/share/openclipart/png")
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
FASHION = Path("/usr/share/datasets/fashion-mnist")
NOT_CATEGORIES = {"unsorted", "special", "buttons", "logos"}  # grab-bags, not classes
BASE_MODELS = ["efficientnet-lite0", "color-histogram", "pixels", "phash"]
RANDOM_TRIPLET = "triplet-efficientnet-lite0-random"


def log(message: str) -> None:
    print(f"[eval_real {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clipsql(data: Path, *args: str) -> tuple[str, float]:
    command = [sys.executable, "-m", "pipeline", *args, "--data-dir", str(data)]
    log("clipsql " + " ".join(args))
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}, check=False)
    if result.returncode != 0:
        raise SystemExit(f"clipsql {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout, time.perf_counter() - started


def folder_subset(source: Path, target: Path, per_class: int, seed: int, extensions: tuple[str, ...]) -> dict:
    """Link `per_class` regular image files of each large enough top-level category into target/<class>/."""
    rng = random.Random(seed)
    chosen: dict[str, list[Path]] = {}
    for category in sorted(p for p in source.iterdir() if p.is_dir() and p.name not in NOT_CATEGORIES):
        files = sorted(p for p in category.rglob("*") if p.suffix.lower() in extensions and p.is_file()
                       and not p.is_symlink())
        if len(files) >= per_class:
            chosen[category.name] = rng.sample(files, per_class)
    for label, files in chosen.items():
        (target / label).mkdir(parents=True)
        for i, file in enumerate(files):
            (target / label / f"{i:03d}_{file.name}").symlink_to(file)
    return {label: len(files) for label, files in chosen.items()}


def fashion_subset(target: Path, n: int) -> dict:
    """The first n test images of Fashion-MNIST as idx files (the real bytes, a shorter header count)."""
    target.mkdir(parents=True)
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as handle:
        header = handle.read(16)
        pixels = handle.read(n * 28 * 28)
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as handle:
        handle.read(8)
        labels = handle.read(n)
    (target / "t10k-images-idx3-ubyte").write_bytes(header[:4] + n.to_bytes(4, "big") + header[8:] + pixels)
    (target / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + n.to_bytes(4, "big") + labels)
    counts = np.bincount(np.frombuffer(labels, np.uint8), minlength=10)
    return {str(i): int(c) for i, c in enumerate(counts)}


def run_set(name: str, args: argparse.Namespace, work: Path) -> dict:
    subset = work / f"{name}-subset"
    data = work / f"{name}-data"
    if name == "openclipart":
        classes = folder_subset(OPENCLIPART, subset, args.per_class, args.seed, (".png",))
        source = f"folder:{subset}"
    elif name == "tuxpaint":
        classes = folder_subset(TUXPAINT, subset, args.tuxpaint_per_class, args.seed, (".png",))
        source = f"folder:{subset}"
    else:
        classes = fashion_subset(subset, args.fashion)
        source = f"idx:{subset}"
    timings: dict[str, float] = {}
    _, timings["extract"] = clipsql(data, "extract", "--source", source)
    models = list(BASE_MODELS)
    if clip_weights_available(DEFAULT_MODEL):
        models.insert(0, DEFAULT_MODEL)
    for model in models:
        _, timings[f"embed {model}"] = clipsql(data, "embed", "--model", model)
    holdout = str(args.holdout)
    _, timings["train pca"] = clipsql(data, "train", "pca", "--holdout", holdout)
    _, timings["train autoencoder"] = clipsql(data, "train", "autoencoder", "--holdout", holdout,
                                              "--epochs", str(args.ae_epochs))
    _, timings["train triplet"] = clipsql(data, "train", "triplet", "--base", "efficientnet-lite0", "--holdout",
                                          holdout, "--epochs", str(args.triplet_epochs))
    _, timings["train triplet random"] = clipsql(data, "train", "triplet", "--base", "efficientnet-lite0",
                                                 "--mining", "random", "--name", RANDOM_TRIPLET, "--holdout", holdout,
                                                 "--epochs", str(args.triplet_epochs))
    models += ["pca", "autoencoder", "triplet-efficientnet-lite0", RANDOM_TRIPLET]
    chart = RESULTS / f"eval-{name}.png"
    model_args = [a for m in models for a in ("--model", m)]
    out, timings["eval"] = clipsql(data, "eval", *model_args, "--holdout", holdout, "--per-class", "--chart",
                                   str(chart), "--format", "json")
    rows = json.loads(out)
    _, timings["load"] = clipsql(data, "load")
    out, timings["eval --index"] = clipsql(data, "eval", "--model", "efficientnet-lite0", "--model",
                                           "triplet-efficientnet-lite0", "--holdout", holdout, "--index",
                                           "--format", "json")
    index_rows = json.loads(out)
    manifests = {m: json.loads((data / "models" / m.replace("-", "_") / "manifest.json").read_text())
                 for m in ("pca", "autoencoder", "triplet-efficientnet-lite0", RANDOM_TRIPLET)}
    for model in manifests:
        for png in ("loss.png", "reconstruction.png"):
            path = data / "models" / model.replace("-", "_") / png
            if path.exists():
                shutil.copy(path, RESULTS / f"eval-{name}-{model}-{png}")
    result = {
        "set": name, "source": source, "classes": classes, "photos": sum(classes.values()), "holdout": args.holdout,
        "k": 5, "models": models, "rows": rows, "index_rows": index_rows, "timings_s": {k: round(v, 1) for k, v in
                                                                                       timings.items()},
        "training": {m: {k: v for k, v in man.items() if k in ("dim", "trained_on", "fitted_on", "epochs",
                                                                "explained_variance_ratio", "train_loss",
                                                                "validation_loss", "mining", "margin", "kept_epoch")}
                     for m, man in manifests.items()},
        "chart": str(chart.relative_to(ROOT)),
    }
    (RESULTS / f"eval-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(results: list[dict]) -> str:
    lines = ["# Retrieval quality on real offline sets (bench/eval_real.py)", "",
             "Leave-one-out over the held-out half of each subset (photos no trained model saw); k = 5.", ""]
    models = []
    for result in results:
        models += [m for m in result["models"] if m not in models]
    header = "| model | " + " | ".join(f"{r['set']} P@5 | mAP" for r in results) + " |"
    lines += [header, "|---|" + "---:|---:|" * len(results)]
    for model in models:
        cells = []
        for result in results:
            row = next((r for r in result["rows"] if r["model"] == model and r["class"] == "(all)"), None)
            cells += [f"{row['precision@5']:.3f}", f"{row['mAP']:.3f}"] if row else ["", ""]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    chance = []
    for result in results:
        row = next(r for r in result["rows"] if r["class"] == "(all)")
        chance += [f"{row['chance']:.3f}", ""]
    lines.append("| chance | " + " | ".join(chance) + " |")
    lines.append("")
    for result in results:
        overall = next(r for r in result["rows"] if r["class"] == "(all)")
        lines.append(f"- {result['set']}: `{result['source']}`, {result['photos']} photos in {len(result['classes'])} "
                     f"classes, {overall['queries']} held-out queries; chart {result['chart']}")
        for row in result["index_rows"]:
            if row["method"] != "exact":
                lines.append(f"  - {row['model']} through the index ({row['method']}): P@5 {row['precision@5']:.3f}, "
                             f"overlap@5 with exact {row['overlap@5']:.3f}, {row['ms/query']} ms/query")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="openclipart,tuxpaint,fashion", help="comma-separated (default all three)")
    parser.add_argument("--per-class", type=int, default=40, help="openclipart images per category (default 40)")
    parser.add_argument("--tuxpaint-per-class", type=int, default=30, help="tuxpaint stamps per category (default 30)")
    parser.add_argument("--fashion", type=int, default=2000, help="Fashion-MNIST test images (default 2000)")
    parser.add_argument("--holdout", type=float, default=0.5)
    parser.add_argument("--ae-epochs", type=int, default=30)
    parser.add_argument("--triplet-epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one, removed)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="clipsql-eval-"))
    results = []
    try:
        for name in args.sets.split(","):
            paths = {"openclipart": OPENCLIPART, "tuxpaint": TUXPAINT, "fashion": FASHION}
            if name not in paths:
                raise SystemExit(f"unknown set {name!r}")
            if not paths[name].exists():
                raise SystemExit(f"{paths[name]} is missing: apt-get install the Debian package (see --help)")
            shutil.rmtree(work / f"{name}-subset", ignore_errors=True)
            shutil.rmtree(work / f"{name}-data", ignore_errors=True)
            results.append(run_set(name, args, work))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if results:
        previous = {}
        for path in RESULTS.glob("eval-*.json"):
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict) and "set" in loaded:
                previous[loaded["set"]] = loaded
        previous.update({r["set"]: r for r in results})
        ordered = [previous[s] for s in ("openclipart", "tuxpaint", "fashion") if s in previous]
        (RESULTS / "eval-real.md").write_text(markdown(ordered))
        print(markdown(ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
