"""Configuration precedence and secret handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings, redact
from pipeline.errors import UsageError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CLIPSQL_DATA_DIR",
        "CLIPSQL_DSN",
        "CLIPSQL_MODEL",
        "CLIPSQL_BATCH_SIZE",
        "CLIPSQL_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)


def test_flags_beat_environment_beat_dotenv_beat_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CLIPSQL_MODEL=from-dotenv\nCLIPSQL_BATCH_SIZE=7\nCLIPSQL_DATA_DIR=/dotenv/dir\n")
    monkeypatch.setenv("CLIPSQL_BATCH_SIZE", "9")
    settings = load_settings({"data_dir": "/flag/dir"}, env_file=env_file)
    assert settings.data_dir == Path("/flag/dir")  # flag
    assert settings.batch_size == 9  # environment over .env
    assert settings.model == "from-dotenv"  # .env over default
    assert settings.device == Settings().device  # default
    assert settings.sources_seen["batch_size"] == "CLIPSQL_BATCH_SIZE"


def test_default_dsn_is_chdb_under_data_dir(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": str(tmp_path)}, env_file=tmp_path / "none")
    assert settings.database_dsn == f"chdb://{(tmp_path / 'clickhouse').resolve()}"


def test_password_only_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CLIPSQL_PASSWORD=hunter2\n")
    with pytest.raises(UsageError, match="must come from the environment"):
        load_settings(env_file=env_file)
    env_file.write_text("CLIPSQL_DSN=http://bob:hunter2@db:8123/x\n")
    with pytest.raises(UsageError, match="contains a password"):
        load_settings(env_file=env_file)


def test_password_is_added_to_http_dsn_and_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSQL_PASSWORD", "s3cr/t")
    settings = load_settings({"dsn": "http://bob@db.example:8123/clipsql"}, env_file=tmp_path / "none")
    assert settings.database_dsn == "http://bob:s3cr%2Ft@db.example:8123/clipsql"
    assert "s3cr" not in redact(settings.database_dsn)
    assert redact("password is s3cr/t") == "password is ***"


@pytest.mark.parametrize(("name", "value"), [("batch_size", "0"), ("batch_size", "many"), ("device", "tpu")])
def test_bad_values_name_the_setting(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(UsageError, match=name.replace("_", "[-_]")):
        load_settings({name: value}, env_file=tmp_path / "none")
