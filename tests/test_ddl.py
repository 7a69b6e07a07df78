"""Dialects and scale-out DDL, checked as SQL text and, where chDB allows, by running it.

chDB has no cluster, no ZooKeeper and no MyScale index, so the cluster script is run here with
the clustering taken out again (ON CLUSTER, Replicated engines, Distributed tables): what runs
is every column, type, sort key, constraint and index clause it carries. The MyScale statements
are checked as text only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.ddl import CATALOGUE_TABLES, DATA_TABLES, ModelSchema, render_script, schema_statements
from pipeline.dialect import CLICKHOUSE, MYSCALE, detect_dialect, get_dialect
from pipeline.errors import UsageError
from pipeline.search import compose_statement
from pipeline.sqlfile import Fragment
from tests.helpers import database, run_cli

MODELS = [ModelSchema("openai_clip_vit_base_patch32", 512), ModelSchema("efficientnet_lite0", 1280)]


def _run_all(data_dir: Path, statements: list[str]) -> None:
    with database(data_dir) as db:
        for statement in statements:
            db.command(statement)


def test_single_server_script_runs_in_chdb_and_creates_every_table(tmp_path: Path) -> None:
    statements = schema_statements(MODELS, CLICKHOUSE)
    _run_all(tmp_path, statements)
    with database(tmp_path) as db:
        names = set(db.tables())
        assert set(DATA_TABLES + CATALOGUE_TABLES + ["photo_embeddings"]) <= names
        for model in MODELS:
            assert {f"embeddings_{model.slug}", f"ivf_{model.slug}", f"keyword_vectors_{model.slug}"} <= names
            index = db.command("SELECT type_full FROM system.data_skipping_indices WHERE table = {t:String}",
                               {"t": f"embeddings_{model.slug}"})
            assert f"'cosineDistance', {model.dim}, 'bf16', 32, 128" in index.replace("\\", "")
        assert detect_dialect(db) is CLICKHOUSE
    _run_all(tmp_path, statements)  # a second run changes nothing: IF NOT EXISTS everywhere


def test_cluster_script_text() -> None:
    statements = schema_statements(MODELS, CLICKHOUSE, cluster="prod")
    script = render_script(statements)
    creates = [s for s in statements if s.lstrip().startswith("CREATE")]
    assert all(" ON CLUSTER `prod`" in s for s in statements)
    for name in DATA_TABLES + [f"embeddings_{m.slug}" for m in MODELS]:
        assert (f"CREATE TABLE IF NOT EXISTS `{name}` ON CLUSTER `prod` AS `local_{name}` ENGINE = Distributed(`prod`, "
                f"currentDatabase(), `local_{name}`, cityHash64(photo_id))") in statements
        assert f"ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{{database}}/local_{name}', '{{replica}}')" in script
    for name in ["load_state", "models"]:  # catalogue: one copy on every node, not sharded
        assert f"ReplicatedReplacingMergeTree('/clickhouse/tables/{{database}}/{name}', '{{replica}}', loaded_at)" in script
    for model in MODELS:
        assert (f"ALTER TABLE `local_embeddings_{model.slug}` ON CLUSTER `prod`\n    ADD INDEX IF NOT EXISTS vec embedding TYPE "
                f"vector_similarity('hnsw', 'cosineDistance', {model.dim}, 'bf16', 32, 128)") in script
        assert f"ALTER TABLE `local_embeddings_{model.slug}` ON CLUSTER `prod` MATERIALIZE INDEX vec" in statements
    assert len(creates) == len(DATA_TABLES) * 2 + len(MODELS) * 4 + len(CATALOGUE_TABLES) + 1
    assert "{table:" not in script and "{dim:" not in script


def _declustered(statement: str) -> str | None:
    """The statement as a single server would run it, or None for a Distributed table."""
    if "ENGINE = Distributed(" in statement:
        return None
    statement = statement.replace(" ON CLUSTER `prod`", "")
    statement = re.sub(r"ENGINE = Replicated(\w*MergeTree)\('[^']*', '\{replica\}'(?:, )?([^)]*)\)",
                       lambda m: f"ENGINE = {m[1]}({m[2]})" if m[2] else f"ENGINE = {m[1]}", statement)
    assert "Replicated" not in statement and "{shard}" not in statement
    return statement


def test_cluster_script_runs_in_chdb_once_the_clustering_is_taken_out(tmp_path: Path) -> None:
    statements = [s for s in map(_declustered, schema_statements(MODELS, CLICKHOUSE, cluster="prod")) if s]
    _run_all(tmp_path, statements)
    with database(tmp_path) as db:
        names = set(db.tables())
    assert {f"local_{name}" for name in DATA_TABLES} <= names
    assert {f"local_embeddings_{m.slug}" for m in MODELS} <= names


def test_myscale_dialect_statements() -> None:
    statements = schema_statements(MODELS[:1], MYSCALE)
    assert ("ALTER TABLE `embeddings_openai_clip_vit_base_patch32` ADD VECTOR INDEX vec embedding TYPE "
            "MSTG('metric_type=Cosine')") in statements
    assert not any("MATERIALIZE INDEX" in s or "vector_similarity" in s for s in statements)
    assert "CHECK length(embedding) = 512" in render_script(statements)


def test_myscale_searches_order_by_distance(tmp_path: Path) -> None:
    _run_all(tmp_path, [])
    with database(tmp_path) as db:
        sql = compose_statement(db, "hnsw", "cosine", MYSCALE.index_metric, Fragment("1"))
        status = db.sql("index/myscale_index_status.sql").text
    assert "distance(embedding, {q:Array(Float32)}) AS index_distance" in sql and "ORDER BY index_distance" in sql
    assert "FROM system.vector_indices" in status and "{table:String}" in status


def test_dialect_choice(capsys, tmp_path: Path) -> None:
    assert get_dialect("myscale") is MYSCALE and get_dialect(None) is CLICKHOUSE
    with pytest.raises(UsageError, match="--dialect must be"):
        get_dialect("postgres")
    out = tmp_path / "schema.sql"
    result = run_cli(capsys, "ddl", "--dialect", "myscale", "--model", "my-model=64", "--output", out,
                     "--data-dir", tmp_path)
    assert result.code == 0, result.err
    assert "CONSTRAINT vector_len CHECK length(embedding) = 64" in out.read_text()
    assert "MSTG('metric_type=Cosine')" in out.read_text()
    result = run_cli(capsys, "ddl", "--model", "unknown-model", "--data-dir", tmp_path)
    assert result.code == 2 and "give its dimension" in result.err
    result = run_cli(capsys, "ddl", "--cluster", "prod; DROP", "--data-dir", tmp_path)
    assert result.code == 2 and "not a plain identifier" in result.err
