"""Wall time of `clipsql run --limit N` against the loopback fixture server.

Serves a generated Unsplash-format zip of N + 200 photos and their generated JPEG thumbnails
from 127.0.0.1, then times the real command in a subprocess (cold: empty data dir), and a
second, no-op run on the same data dir. Writes bench/results/fixture_run-<model>.json.

    python bench/fixture_run.py --limit 1000 --model efficientnet-lite0
    python bench/fixture_run.py --limit 1000 --model tiny-clip
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.server import FixtureServer  # noqa: E402
from tests.fixtures.tiny_clip import build_tiny_clip  # noqa: E402
from tests.fixtures.unsplash import make_dataset, write_zip  # noqa: E402


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--model", default="efficientnet-lite0", help="efficientnet-lite0, tiny-clip, or a model path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FixtureServer() as server:
        tmp_path = Path(tmp)
        model = str(build_tiny_clip(tmp_path / "tiny-clip")) if args.model == "tiny-clip" else args.model
        tables = make_dataset(args.limit + 200, seed=11, image_base_url=server.image_base_url)
        url = server.add_file("bench.zip", write_zip(tables, tmp_path / "bench.zip").read_bytes())
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "pipeline", "run", "--source", url, "--limit", str(args.limit),
               "--model", model, "--data-dir", str(tmp_path / "data")]
        cold, first = timed(cmd, env)
        if first.returncode:
            print(first.stderr, file=sys.stderr)
            return first.returncode
        image_requests = sum(n for p, n in server.requests.items() if p.startswith("/img/"))
        server.reset()
        warm, second = timed(cmd, env)
        embed = json.loads((tmp_path / "data" / "reports" / "embed-latest.json").read_text())
        figures = {
            "command": f"clipsql run --limit {args.limit} --model {args.model} (fixture server)",
            "model": args.model, "photos": args.limit, "cold_run_s": round(cold, 2), "noop_rerun_s": round(warm, 2),
            "image_requests_cold": image_requests,
            "image_requests_rerun": sum(n for p, n in server.requests.items() if p.startswith("/img/")),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
            "rerun_embed_report": embed,
        }
        out = ROOT / "bench" / "results" / f"fixture_run-{args.model}.json"
        out.write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps({k: v for k, v in figures.items() if k != "rerun_embed_report"}, indent=2))
        print(first.stderr[-1500:], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
