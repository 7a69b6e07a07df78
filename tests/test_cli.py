"""The installed `clipsql` command as a user runs it: help, exit codes, formats, the chDB lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.unsplash import make_dataset, write_tsv_dir
from tests.helpers import run_cli

CLIPSQL = [sys.executable, "-m", "pipeline"]


def clipsql(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLIPSQL, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def test_help_lists_every_command() -> None:
    result = clipsql("--help")
    assert result.returncode == 0
    for command in ("run", "extract", "embed", "load", "search", "query", "sql", "status", "demo"):
        assert f"    {command}" in result.stdout
    search_help = clipsql("search", "--help").stdout
    for option in ("--photo-id", "--image", "--text", "--format", "--data-dir", "--dsn", "-k"):
        assert option in search_help


def test_usage_errors_exit_2() -> None:
    assert clipsql("search", "--photo-id", "x", "--text", "y").returncode == 2
    assert clipsql("search", "--photo-id", "x", "-k", "0").returncode == 2
    assert clipsql("nonsense").returncode == 2


def test_query_list_json_and_unknown_query(tmp_path: Path, capsys) -> None:
    result = run_cli(capsys, "query", "--list", "--format", "json", "--data-dir", tmp_path)
    names = {row["name"] for row in result.json()}
    assert {"similar_downloads", "popular_candidate_keywords"} <= names
    result = run_cli(capsys, "query", "no_such_query", "--data-dir", tmp_path)
    assert result.code == 6 and "no query named 'no_such_query'" in result.err and "similar_downloads" in result.err


def test_commands_on_an_empty_data_dir_explain_what_to_do(tmp_path: Path, capsys) -> None:
    result = run_cli(capsys, "search", "--photo-id=abc", "--data-dir", tmp_path)
    assert result.code == 6 and "clipsql run" in result.err
    result = run_cli(capsys, "embed", "--data-dir", tmp_path, "--model", "efficientnet-lite0")
    assert result.code == 1 and "clipsql extract" in result.err
    result = run_cli(capsys, "status", "--format", "json", "--data-dir", tmp_path)
    assert result.code == 0
    assert {r["name"]: r["rows"] for r in result.json() if r["kind"] == "table"}["photos"] is None


def test_data_dir_and_dsn_after_the_subcommand_and_from_env(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_tsv_dir(make_dataset(5, seed=3), source)
    data = tmp_path / "d"
    assert clipsql("extract", "--source", source, "--data-dir", data).returncode == 0
    assert (data / "parquet" / "photos.parquet").exists()
    other = tmp_path / "other"
    result = clipsql("extract", "--source", source, env={"CLIPSQL_DATA_DIR": str(other)})
    assert result.returncode == 0 and (other / "parquet" / "photos.parquet").exists()
    result = clipsql("sql", "SELECT 1 AS one", "--format", "json", "--dsn", f"chdb://{tmp_path / 'db'}")
    assert result.returncode == 0 and json.loads(result.stdout) == [{"one": 1}]


def test_second_process_gets_a_clear_lock_error(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, pipeline; c = pipeline.connect(sys.argv[1]); c.command('SELECT 1'); "
         "print('ready', flush=True); time.sleep(30)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        result = clipsql("status", "--data-dir", tmp_path)
        assert result.returncode == 75
        assert "in use by another process" in result.stderr
        assert "--dsn http" in result.stderr  # how to move to a server
        assert "Traceback" not in result.stderr and "EmbeddedServer" not in result.stderr
        assert time.monotonic() - started < 60
    finally:
        holder.kill()
        holder.wait()
    assert clipsql("status", "--data-dir", tmp_path).returncode == 0  # released when the holder exits


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_output_formats(tmp_path: Path, capsys, fmt: str) -> None:
    result = run_cli(capsys, "sql", "SELECT 1 AS a, 'x,\"y' AS b, [1.5, 2] AS v", "--format", fmt, "--data-dir", tmp_path)
    assert result.code == 0, result.err
    if fmt == "json":
        assert result.json() == [{"a": 1, "b": 'x,"y', "v": [1.5, 2.0]}]
    elif fmt == "csv":
        assert result.out.splitlines()[0] == "a,b,v" and '"x,""y"' in result.out
    else:
        assert result.out.splitlines()[0].split() == ["a", "b", "v"] and "(1 row)" in result.out


def test_sql_errors_are_one_clear_line(tmp_path: Path, capsys) -> None:
    result = run_cli(capsys, "sql", "SELECT no_such_column FROM system.one", "--data-dir", tmp_path)
    assert result.code == 5
    assert "no_such_column" in result.err and "Traceback" not in result.err
    result = run_cli(capsys, "sql", "SELECT {x:UInt8} AS x", "--param", "x=300", "--data-dir", tmp_path)
    assert result.code == 2 and "out of range 0..255" in result.err


def test_server_dsn_errors_never_print_the_password(tmp_path: Path) -> None:
    result = clipsql("status", "--dsn", "http://analyst@127.0.0.1:9/clipsql", "--data-dir", tmp_path,
                     env={"CLIPSQL_PASSWORD": "hunter2-secret"}, timeout=60)
    assert result.returncode == 5
    assert "cannot connect to http://analyst:***@127.0.0.1:9/clipsql" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
