"""`clipsql demo`, the README's main command: offline, on the bundled sample, in a fresh directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_offline_and_prints_search_and_analytics(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # no cached CLIP weights
    result = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--data-dir", str(tmp_path / "data")],
                            capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "efficientnet-lite0" in result.stderr and "weights are not on this machine" in result.stderr
    assert "Photos most similar to" in result.stdout
    assert "similar_downloads" in result.stdout and "popular_candidate_keywords" in result.stdout
    for stage in ("extract", "embed", "load"):
        report = json.loads((tmp_path / "data" / "reports" / f"{stage}-latest.json").read_text())
        assert report["rejected"] == 0 and report["in"] == report["out"] + report["skipped"]

    again = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--format", "json", "--data-dir",
                            str(tmp_path / "data")], capture_output=True, text=True, timeout=600, env=env, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = json.loads(again.stdout)
    sections = {row["section"] for row in rows}
    assert sections == {"search", "similar_downloads", "popular_candidate_keywords"}
    assert len([r for r in rows if r["section"] == "search"]) == 5
    embed = json.loads((tmp_path / "data" / "reports" / "embed-latest.json").read_text())
    assert embed["out"] == 0 and embed["skipped"] == 300  # nothing recomputed
