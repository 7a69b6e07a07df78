"""Kill a run with SIGKILL at many points; the next run must end exactly where a clean run ends.

Each scenario runs `clipsql run` in a subprocess that kills itself at a named failpoint
(pipeline/failpoints.py) or is killed from outside after a delay, then runs it again to
completion, and compares the database with an uninterrupted run's: same rows in every table,
the same vectors, a built index, no staging tables left, and no image fetched twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.schemas import TABLES
from pipeline.store import EmbeddingStore
from tests.fixtures.unsplash import make_dataset, write_zip
from tests.helpers import database

FAILPOINTS = [
    "download.block",
    "extract.table_written:1",
    "extract.table_written:4",
    "embed.batch_computed:1",
    "embed.part_written:1",
    "embed.part_written:3",
    "load.table_inserted:2",
    "load.before_swap:1",
    "load.swapped:3",
    "load.vectors_inserted",
    "load.index_built",
    "run.before_record",
]
DELAYS = [1.5, 3.0, 4.5]


def _run(url: str, model: Path, data_dir: Path, failpoint: str | None = None, kill_after: float | None = None) -> int:
    env = {**os.environ, "CLIPSQL_BATCH_SIZE": "4", "CLIPSQL_FLUSH_ROWS": "4", "CLIPSQL_WORKERS": "2",
           "HF_HUB_OFFLINE": "1"}
    env.pop("CLIPSQL_FAILPOINT", None)
    if failpoint:
        env["CLIPSQL_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "pipeline", "run", "--source", url, "--model", str(model), "--data-dir", str(data_dir),
           "-q"]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=300)
    if process.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"run failed ({process.returncode}): {err[-2000:]}")
    return process.returncode


def _state(data_dir: Path, model: Path) -> dict:
    store = EmbeddingStore(data_dir / "embeddings", str(model))
    with database(data_dir) as db:
        state = {table: db.query_rows("SELECT count(), sum(cityHash64(*)) FROM {t:Identifier}", {"t": table})[0]
                 for table in TABLES}
        rows = db.query_rows("SELECT photo_id, embedding, sha256 FROM {t:Identifier} ORDER BY photo_id",
                             {"t": store.table_name})
        state["index_bytes_positive"] = int(db.command(
            "SELECT sum(data_compressed_bytes) FROM system.data_skipping_indices WHERE table = {t:String}",
            {"t": store.table_name})) > 0
        state["staging_tables"] = db.tables("_stage_")
        state["merge_view_rows"] = int(db.command("SELECT count() FROM photo_embeddings"))
        state["last_run"] = db.query_rows("SELECT outcome FROM runs ORDER BY started_at DESC LIMIT 1")
    state["ids"] = [r[0] for r in rows]
    state["hashes"] = [r[2] for r in rows]
    state["vectors"] = np.array([r[1] for r in rows], dtype=np.float32)
    return state


def _assert_same(got: dict, want: dict) -> None:
    vectors_got, vectors_want = got.pop("vectors"), want["vectors"]
    assert got == {k: v for k, v in want.items() if k != "vectors"}
    np.testing.assert_allclose(vectors_got, vectors_want, atol=1e-5)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, fixture_server, tiny_clip_dir):
    root = tmp_path_factory.mktemp("crash")
    tables = make_dataset(24, seed=9, image_base_url=fixture_server.image_base_url)
    url = fixture_server.add_file("crash-test.zip", write_zip(tables, root / "crash.zip").read_bytes())
    clean = root / "clean"
    assert _run(url, tiny_clip_dir, clean) == 0
    return url, tiny_clip_dir, _state(clean, tiny_clip_dir), root


@pytest.fixture(scope="module")
def second_release(scenario, fixture_server):
    """Release B (30 photos, 6 new) and the state a clean A-then-B sequence ends in."""
    url_a, model, _, root = scenario
    tables = make_dataset(30, seed=9, image_base_url=fixture_server.image_base_url)
    url_b = fixture_server.add_file("crash-test-b.zip", write_zip(tables, root / "crash-b.zip").read_bytes())
    clean = root / "clean-b"
    assert _run(url_a, model, clean) == 0 and _run(url_b, model, clean) == 0
    return url_b, _state(clean, model)


@pytest.mark.slow
@pytest.mark.parametrize("point", FAILPOINTS + [f"after {d} s" for d in DELAYS])
def test_killed_run_resumes_to_the_clean_state(scenario, fixture_server, point: str) -> None:
    url, model, clean_state, root = scenario
    data_dir = root / point.replace(" ", "_").replace(":", "_")
    fixture_server.reset()
    if point.startswith("after"):
        code = _run(url, model, data_dir, kill_after=float(point.split()[1]))
    else:
        code = _run(url, model, data_dir, failpoint=point)
        assert code == -signal.SIGKILL, f"failpoint {point} was never reached"
    store = EmbeddingStore(data_dir / "embeddings", str(model))
    embedded_before = set(store.embedded_ids().to_pylist()) if store.dir.exists() else set()
    cached_before = {p.name for p in (data_dir / "images").glob("*/*")}
    fixture_server.reset()
    assert _run(url, model, data_dir) == 0
    _assert_same(_state(data_dir, model), dict(clean_state))
    refetched = {p.removeprefix("/img/").removesuffix(".jpg") for p in fixture_server.requests if p.startswith("/img/")}
    assert not refetched & embedded_before, "images of photos embedded before the kill were fetched again"
    from pipeline.images import ImageFetcher, thumbnail_url

    fetcher = ImageFetcher(data_dir / "images")
    assert not {i for i in refetched if fetcher.cache_path(thumbnail_url(f"{fixture_server.image_base_url}/{i}.jpg")).name
                in cached_before}, "cached images were fetched again"


@pytest.mark.slow
@pytest.mark.parametrize("point", ["load.after_exchange:1", "load.after_exchange:5", "load.before_swap:6",
                                   "embed.part_written:1"])
def test_killed_update_of_live_tables_resumes_to_the_clean_state(scenario, second_release, point: str) -> None:
    """The same, for a run that replaces live tables (EXCHANGE TABLES) with a newer release."""
    url_a, model, _, root = scenario
    url_b, clean_b = second_release
    data_dir = root / f"update-{point.replace(':', '_')}"
    assert _run(url_a, model, data_dir) == 0
    assert _run(url_b, model, data_dir, failpoint=point) == -signal.SIGKILL, f"failpoint {point} was never reached"
    assert _run(url_b, model, data_dir) == 0
    _assert_same(_state(data_dir, model), dict(clean_b))
