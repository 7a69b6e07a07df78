"""Scheduled refresh: only new or changed photos cost work, removed ones go, one writer at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.lock import LOCK_NAME
from pipeline.store import EmbeddingStore
from tests.fixtures.unsplash import make_dataset, write_zip
from tests.helpers import database, run_cli, table_counts


@pytest.fixture
def release(tmp_path: Path, fixture_server):
    """Serve a 30-photo release; returns a function that (re)publishes given tables."""

    def publish(tables):
        zip_path = write_zip(tables, tmp_path / f"release-{time.time_ns()}.zip")
        return fixture_server.add_file("refresh-test.zip", zip_path.read_bytes())

    return publish


def test_refresh_applies_additions_changes_and_removals(tmp_path: Path, capsys, fixture_server, tiny_clip_dir, release) -> None:
    base = fixture_server.image_base_url
    tables = make_dataset(30, seed=5, image_base_url=base)
    url = release(tables)
    data_dir = tmp_path / "data"
    first = run_cli(capsys, "run", "--source", url, "--model", tiny_clip_dir, "--data-dir", data_dir)
    assert first.code == 0, first.err
    store = EmbeddingStore(data_dir / "embeddings", str(tiny_clip_dir))
    before = {r["photo_id"]: r for r in store.read_all().to_pylist()}

    # A no-op refresh: defaults from the last run, not one image request, nothing reloaded.
    fixture_server.reset()
    started = time.monotonic()
    noop = run_cli(capsys, "refresh", "--data-dir", data_dir)
    assert noop.code == 0, noop.err
    assert time.monotonic() - started < 10
    assert not [p for p in fixture_server.requests if p.startswith("/img/")]
    load_report = json.loads((data_dir / "reports" / "load-latest.json").read_text())
    assert load_report["out"] == 0  # every table unchanged

    # The next release: 6 photos added, 1 removed, 2 with a new URL (same bytes / new bytes).
    bigger = make_dataset(36, seed=5, image_base_url=base)  # same first 30 photos, 6 more
    photos = bigger["photos"]
    ids = photos["photo_id"].tolist()
    removed, same_bytes, new_bytes = ids[10], ids[11], ids[12]
    photos.loc[photos["photo_id"] == same_bytes, "photo_image_url"] = f"{base}/{same_bytes}.jpg?v=2"
    photos.loc[photos["photo_id"] == new_bytes, "photo_image_url"] = f"{base}/{ids[35]}.jpg"
    for name in bigger:
        bigger[name] = bigger[name][bigger[name]["photo_id"] != removed].reset_index(drop=True)
    release(bigger)
    fixture_server.reset()
    refreshed = run_cli(capsys, "refresh", "--data-dir", data_dir)
    assert refreshed.code == 0, refreshed.err

    fetched = sorted(p for p in fixture_server.requests if p.startswith("/img/"))
    assert fetched == sorted({f"/img/{i}.jpg" for i in ids[30:36]} | {f"/img/{same_bytes}.jpg"})
    after = {r["photo_id"]: r for r in store.read_all().to_pylist()}
    np.testing.assert_array_equal(after[same_bytes]["embedding"], before[same_bytes]["embedding"])
    assert after[same_bytes]["image_url"].endswith("?v=2")
    np.testing.assert_allclose(after[new_bytes]["embedding"], after[ids[35]]["embedding"], atol=1e-6)
    embed = json.loads((data_dir / "reports" / "embed-latest.json").read_text())
    assert embed["details"]["same_image_new_url"] == 1 and embed["out"] == 7  # 6 new + 1 changed image

    with database(data_dir) as db:
        for table, count in table_counts(bigger).items():
            assert db.count(table) == count, table
        assert db.count(store.table_name) == 35
        assert int(db.command("SELECT count() FROM photo_embeddings WHERE photo_id = {p:String}", {"p": removed})) == 0
        runs = db.query_rows("SELECT command, outcome FROM runs ORDER BY started_at")
    assert runs == [("run", "ok"), ("refresh", "ok"), ("refresh", "ok")]


def test_failed_run_is_recorded_with_its_error(tmp_path: Path, capsys) -> None:
    data_dir = tmp_path / "data"
    result = run_cli(capsys, "run", "--source", str(tmp_path / "missing.zip"), "--data-dir", data_dir)
    assert result.code == 3
    run = json.loads((data_dir / "reports" / "run-latest.json").read_text())
    assert run["outcome"] == "failed" and "missing.zip" in run["error"]


def test_second_writer_exits_75_naming_the_holder(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from pipeline.lock import writer_lock\n"
         "with writer_lock(Path(sys.argv[1]), 'clipsql refresh'):\n"
         "    print('ready', flush=True); time.sleep(30)", str(data_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = subprocess.run([sys.executable, "-m", "pipeline", "refresh", "--data-dir", str(data_dir)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 75
        assert f"pid {holder.pid}" in result.stderr and "clipsql refresh" in result.stderr
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: its lock file stays, but the lock is free.
    assert (data_dir / LOCK_NAME).exists()
    result = subprocess.run([sys.executable, "-m", "pipeline", "load", "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and "clipsql extract" in result.stderr  # got past the lock


def test_log_file_receives_the_reports(tmp_path: Path, capsys) -> None:
    log_file = tmp_path / "logs" / "clipsql.log"
    source = tmp_path / "src"
    from tests.fixtures.unsplash import write_tsv_dir

    write_tsv_dir(make_dataset(4, seed=2), source)
    result = run_cli(capsys, "extract", "--source", source, "--data-dir", tmp_path / "d", "--log-file", log_file, "-q")
    assert result.code == 0 and result.err == ""
    assert "extract: in" in log_file.read_text()
