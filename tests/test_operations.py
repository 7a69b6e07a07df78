"""Operating clipsql: gc, status after runs, secrets kept out of files, the deploy examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from pipeline.resources import sql_dir
from pipeline.sqlfile import parse_sql_file
from pipeline.store import EmbeddingStore
from tests.fixtures.unsplash import make_dataset, write_zip
from tests.helpers import database, run_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def loaded(tmp_path: Path, capsys, fixture_server, tiny_clip_dir):
    tables = make_dataset(12, seed=4, image_base_url=fixture_server.image_base_url)
    url = fixture_server.add_file("ops.zip", write_zip(tables, tmp_path / "ops.zip").read_bytes())
    fixture_server.set_image(tables["photos"]["photo_id"][2], "404")
    data_dir = tmp_path / "data"
    result = run_cli(capsys, "run", "--source", url, "--model", tiny_clip_dir, "--data-dir", data_dir)
    assert result.code == 0, result.err
    return data_dir, tables, str(tiny_clip_dir), url


def test_gc_merges_parts_drops_staging_and_superseded_images(loaded, capsys) -> None:
    data_dir, tables, model, _ = loaded
    store = EmbeddingStore(data_dir / "embeddings", model)
    extra = store.read_all().slice(0, 3)  # a second part re-embedding three photos
    store.write_embeddings(extra)
    (data_dir / "images" / "ff").mkdir(parents=True, exist_ok=True)
    stale = data_dir / "images" / "ff" / ("f" * 40)
    stale.write_bytes(b"an image no photo points at any more")
    with database(data_dir) as db:
        db.command("CREATE TABLE _stage_photos (x UInt8) ENGINE = MergeTree ORDER BY x")
    fingerprint = store.fingerprint()
    vectors_before = {r["photo_id"]: r["embedding"] for r in store.read_all().to_pylist()}

    result = run_cli(capsys, "gc", "--data-dir", data_dir)
    assert result.code == 0, result.err
    assert len(list(store.dir.glob("part-*.parquet"))) == 1
    assert {r["photo_id"]: r["embedding"] for r in store.read_all().to_pylist()} == vectors_before
    assert store.fingerprint() == fingerprint  # merging parts is not a change: load will not rebuild
    assert not stale.exists()
    assert len(list((data_dir / "images").glob("*/*"))) == 11  # the 11 fetched thumbnails stay
    with database(data_dir) as db:
        assert db.tables("_stage_") == []
        assert db.count("photos") == 12


def test_status_shows_last_run_and_pending_rejects(loaded, capsys) -> None:
    data_dir, *_ = loaded
    rows = run_cli(capsys, "status", "--format", "json", "--data-dir", data_dir).json()
    kinds = {row["kind"]: row for row in rows}
    assert kinds["last run"]["name"] == "run" and kinds["last run"]["detail"].startswith("ok at ")
    rejects = [row for row in rows if row["kind"] == "rejects"]
    assert [(r["name"], r["rows"]) for r in rejects] == [(f"embed-{rejects[0]['name'][6:-4]}.csv", 1)]
    assert "version" in kinds["dataset"]["detail"]


def test_no_secret_reaches_reports_logs_or_metadata(tmp_path: Path, capsys, fixture_server, monkeypatch) -> None:
    tables = make_dataset(3, seed=6, image_base_url=fixture_server.image_base_url)
    fixture_server.add_file("secret.zip", write_zip(tables, tmp_path / "s.zip").read_bytes())
    url = fixture_server.data_url("secret.zip").replace("http://", "http://reader:tok3n-s3cret@")
    monkeypatch.setenv("CLIPSQL_PASSWORD", "pw-s3cret")
    log = tmp_path / "log.txt"
    data_dir = tmp_path / "data"
    result = run_cli(capsys, "extract", "--source", url, "--data-dir", data_dir, "--log-file", log)
    assert result.code == 0, result.err
    texts = [result.out, result.err, log.read_text()]
    texts += [p.read_text(errors="replace") for p in data_dir.rglob("*.json")]
    for text in texts:
        assert "tok3n-s3cret" not in text and "pw-s3cret" not in text


def test_read_only_role_sql_is_documented_and_parameterised() -> None:
    role = parse_sql_file(sql_dir() / "roles" / "analyst_readonly.sql")
    assert role.placeholders == {"database": "Identifier"}
    statements = role.statements()
    assert statements[0].startswith("CREATE ROLE") and "GRANT SELECT ON {database:Identifier}.*" in statements[1]
    assert "readonly = 2" in statements[2]


def test_deploy_examples_are_valid_and_keep_secrets_out() -> None:
    cronjob = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "cronjob.yaml").read_text())
    assert cronjob["kind"] == "CronJob" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert container["args"] == ["clipsql", "refresh"]
    assert env["CLIPSQL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "clipsql-clickhouse"
    assert env["CLIPSQL_DSN"]["value"].startswith("http://") and ":" not in env["CLIPSQL_DSN"]["value"].split("@")[0][7:]
    service = (ROOT / "deploy" / "systemd" / "clipsql-refresh.service").read_text()
    timer = (ROOT / "deploy" / "systemd" / "clipsql-refresh.timer").read_text()
    assert re.search(r"^ExecStart=.*clipsql refresh$", service, re.M) and "SuccessExitStatus=75" in service
    assert "CLIPSQL_PASSWORD=" not in service and "EnvironmentFile=" in service
    assert "OnCalendar=" in timer and "Persistent=true" in timer
    readme = (ROOT / "deploy" / "README.md").read_text()
    cron_line = next(line for line in readme.splitlines() if re.match(r"^\d+ \d+ \* \* \*", line))
    assert "clipsql refresh" in cron_line and "75" in cron_line


def test_refresh_help_names_the_exit_codes_in_the_module_doc() -> None:
    import pipeline.cli

    assert "75 locked" in pipeline.cli.__doc__


def test_arrow_embedding_part_schema_is_enforced(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path, "m")
    with pytest.raises((pa.ArrowInvalid, KeyError, ValueError)):
        store.write_embeddings(pa.table({"photo_id": ["a"]}))
    assert json.dumps(store.read_all().schema.names) == json.dumps(
        ["photo_id", "model", "embedding", "sha256", "image_url", "embedded_at"])


def test_load_quarantines_vectors_with_nan_or_wrong_length(loaded, capsys) -> None:
    data_dir, tables, model, _ = loaded
    store = EmbeddingStore(data_dir / "embeddings", model)
    current = store.read_all()
    ids = current["photo_id"].to_pylist()[:2]
    broken = current.filter(pa.array([i in ids for i in current["photo_id"].to_pylist()]))
    dim = len(broken["embedding"][0].as_py())
    vectors = [[float("nan")] * dim, [0.5] * (dim + 1)]
    import time as _time

    later = pa.array([int(_time.time() * 1000) + 10_000] * 2, pa.timestamp("ms", tz="UTC"))
    store.write_embeddings(broken.set_column(2, "embedding", pa.array(vectors, pa.list_(pa.float32())))
                           .set_column(5, "embedded_at", later))
    result = run_cli(capsys, "load", "--data-dir", data_dir)
    assert result.code == 0, result.err
    report = json.loads((data_dir / "reports" / "load-latest.json").read_text())
    assert report["rejected"] == 2 and report["in"] == report["out"] + report["skipped"] + report["rejected"]
    rejects = (data_dir / "rejects" / f"load-{store.slug}.csv").read_text()
    assert all(i in rejects for i in ids)
    with database(data_dir) as db:
        assert db.count(store.table_name) == current.num_rows - 2
