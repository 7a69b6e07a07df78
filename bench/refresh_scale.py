"""Wall time of `clipsql refresh` at 25k photos: a no-op, and one adding 10% new photos.

Images cannot be embedded at this scale in a benchmark, so the release is an `hf:/local/dir`
source (the layout of the tutorial's published dataset: photos-all.parquet with precomputed
512-d vectors, conversions-all.parquet), filled with clustered synthetic vectors. `clipsql run`
loads it; then a no-op `clipsql refresh`, a refresh after 10% more photos are published, and
another no-op are timed, each a separate process as a scheduler would start it.

    python bench/refresh_scale.py --photos 25000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.data import clustered, photo_ids  # noqa: E402


def write_release(directory: Path, vectors: np.ndarray, ids: list[str]) -> None:
    """photos-all.parquet and conversions-all.parquet as the published dataset has them."""
    directory.mkdir(parents=True, exist_ok=True)
    n, dim = vectors.shape
    embed = pa.ListArray.from_arrays(pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32)),
                                     pa.array(vectors.ravel(), pa.float32()))
    pq.write_table(pa.table({"id": pa.array(np.arange(n)), "photo_id": ids,
                             "photo_image_url": [f"https://images.invalid/{i}" for i in ids], "photo_embed": embed}),
                   directory / "photos-all.parquet")
    rng = np.random.default_rng(1)
    rows = rng.integers(0, n, 4 * n)
    pq.write_table(pa.table({"id": pa.array(np.arange(rows.size)), "photo_id": [ids[r] for r in rows],
                             "keyword": [f"kw{r % 97}" for r in rows]}), directory / "conversions-all.parquet")


def clipsql(*args: str, data_dir: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", *args, "--data-dir", str(data_dir), "-q"], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    return round(time.perf_counter() - started, 2)


def measure(photos: int = 25_000) -> dict:
    vectors, _ = clustered(round(photos * 1.1), 0)
    ids = photo_ids(len(vectors))
    before = photos
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        source, data_dir = tmp_path / "release", tmp_path / "data"
        write_release(source, vectors[:before], ids[:before])
        initial = clipsql("run", "--source", f"hf:{source}", data_dir=data_dir)
        noop = clipsql("refresh", data_dir=data_dir)
        write_release(source, vectors, ids)
        delta = clipsql("refresh", data_dir=data_dir)
        noop_after = clipsql("refresh", data_dir=data_dir)
        load = json.loads((data_dir / "reports" / "load-latest.json").read_text()) \
            if (data_dir / "reports" / "load-latest.json").exists() else None
    return {"photos_before": before, "photos_after": len(vectors), "initial_run_s": initial, "noop_refresh_s": noop,
            "refresh_plus_10pct_s": delta, "noop_refresh_after_s": noop_after, "source": "hf:<local dir>",
            "last_load_report": load}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=25_000)
    args = parser.parse_args()
    figures = measure(args.photos)
    print(json.dumps({k: v for k, v in figures.items() if k != "last_load_report"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
