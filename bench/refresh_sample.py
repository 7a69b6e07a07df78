"""Wall time of `clipsql refresh` on the bundled sample: a no-op, and one adding 10% new photos.

Builds a copy of pipeline/sample with its first 90% of photos (and only their rows), runs
`clipsql run` on it, then times: a no-op `clipsql refresh`; a refresh after the full sample
(10% more photos) is put in place of the copy; another no-op. EfficientNet-Lite0 on CPU.
Writes bench/results/refresh_sample.json.

    python bench/refresh_sample.py
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pipeline" / "sample"


def write_subset(target: Path, keep_fraction: float) -> int:
    """Copy the sample's TSVs keeping the first fraction of photos; images are shared by path."""
    target.mkdir(parents=True, exist_ok=True)
    with (SAMPLE / "photos.tsv000").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    photos = rows[1:]
    kept = photos[: round(len(photos) * keep_fraction)]
    ids = {row[0] for row in kept}
    for path in sorted(SAMPLE.glob("*.tsv*")):
        with path.open(newline="", encoding="utf-8") as handle:
            table = list(csv.reader(handle, delimiter="\t"))
        column = table[0].index("photo_id")
        body = [row for row in table[1:] if row[column] in ids]
        with (target / path.name).open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, delimiter="\t", lineterminator="\n")
            writer.writerow(table[0])
            writer.writerows(body)
    images = target / "images"
    if not images.exists():
        images.symlink_to(SAMPLE / "images")
    return len(kept)


def clipsql(*args: str, data_dir: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", *args, "--data-dir", str(data_dir), "-q"], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return round(time.perf_counter() - started, 2)


def measure() -> dict:
    """The refresh figures on the bundled sample (the suite calls this; main() also writes them)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        source, data_dir = tmp_path / "release", tmp_path / "data"
        before = write_subset(source, 0.9)
        initial = clipsql("run", "--source", str(source), "--model", "efficientnet-lite0", data_dir=data_dir)
        noop = clipsql("refresh", data_dir=data_dir)
        shutil.rmtree(source)
        after = write_subset(source, 1.0)
        delta = clipsql("refresh", data_dir=data_dir)
        noop_after = clipsql("refresh", data_dir=data_dir)
        embed = json.loads((data_dir / "reports" / "embed-latest.json").read_text())
    return {"photos_before": before, "photos_after": after, "initial_run_s": initial,
            "noop_refresh_s": noop, "refresh_plus_10pct_s": delta, "noop_refresh_after_s": noop_after,
            "model": "efficientnet-lite0", "cpu_cores": os.cpu_count(), "last_embed_report": embed}


def main() -> int:
    figures = measure()
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "refresh_sample.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "last_embed_report"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
