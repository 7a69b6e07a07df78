"""Settings, resolved as: command-line flags > environment (`CLIPSQL_*`) > `.env` > defaults.

Secrets (the database password) are read from the environment only, never from `.env` or
flags, and `redact()` keeps them out of anything printed or written to reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from dotenv import dotenv_values

from .errors import UsageError

UNSPLASH_LITE_URL = "https://unsplash-datasets.s3.amazonaws.com/lite/latest/unsplash-research-dataset-lite-latest.zip"
DEFAULT_MODEL = "openai/clip-vit-base-patch32"
PASSWORD_ENV = "CLIPSQL_PASSWORD"


@dataclass
class Settings:
    """Everything a command needs to know about where data lives and how to process it."""

    data_dir: Path = Path("data")
    dsn: str | None = None  # None: chDB on disk under data_dir
    source: str = UNSPLASH_LITE_URL
    model: str = DEFAULT_MODEL
    batch_size: int = 32
    device: str = "auto"
    workers: int = 16  # concurrent image downloads
    http_timeout: float = 20.0
    http_retries: int = 3
    flush_rows: int = 512  # vectors per Parquet part: the most compute a crash can lose
    index_quantization: str = "bf16"  # HNSW: how vectors are stored in the graph (f32, bf16, f16, i8, b1)
    index_m: int = 32  # HNSW: edges per node
    index_ef_construction: int = 128  # HNSW: candidate list size while building
    ivf_lists: int | None = None  # IVF k-means cells; None: about sqrt(vectors); 0: none
    dialect: str = "auto"  # clickhouse or myscale; auto: detected from the server
    sources_seen: dict[str, str] = field(default_factory=dict, repr=False)  # setting -> where it came from

    @property
    def database_dsn(self) -> str:
        """The DSN actually used, with the password from the environment if one is set."""
        dsn = self.dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"
        password = os.environ.get(PASSWORD_ENV)
        if password and dsn.startswith(("http://", "https://")):
            parts = urlsplit(dsn)
            user = parts.username or "default"
            host = parts.hostname or "localhost"
            netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (
                f":{parts.port}" if parts.port else ""
            )
            dsn = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        return dsn

    def paths(self) -> DataPaths:
        return DataPaths(self.data_dir)


@dataclass(frozen=True)
class DataPaths:
    """The layout of the data directory, in one place so stages agree on it."""

    root: Path

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def parquet(self) -> Path:
        return self.root / "parquet"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def hashes(self) -> Path:
        return self.root / "hashes"

    @property
    def rejects(self) -> Path:
        return self.root / "rejects"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"


_INT_FIELDS = {"batch_size", "workers", "http_retries", "flush_rows", "index_m", "index_ef_construction"}
_FLOAT_FIELDS = {"http_timeout"}
_SETTING_NAMES = [f.name for f in fields(Settings) if f.name != "sources_seen"]


def _coerce(name: str, value: Any, origin: str) -> Any:
    if value is None:
        return None
    try:
        if name == "ivf_lists":
            coerced = int(value)
            if coerced < 0:
                raise ValueError
            return coerced
        if name in _INT_FIELDS:
            coerced: Any = int(value)
            if coerced <= 0:
                raise ValueError
            return coerced
        if name in _FLOAT_FIELDS:
            coerced = float(value)
            if coerced <= 0:
                raise ValueError
            return coerced
    except (TypeError, ValueError):
        kind = "a non-negative" if name == "ivf_lists" else "a positive"
        raise UsageError(f"{origin}: {name} must be {kind} number, got {value!r}") from None
    if name == "data_dir":
        return Path(value).expanduser()
    if name == "index_quantization" and value not in ("f64", "f32", "f16", "bf16", "i8", "b1"):
        raise UsageError(f"{origin}: index quantization must be f64, f32, f16, bf16, i8 or b1, got {value!r}")
    if name == "dialect" and value not in ("auto", "clickhouse", "myscale"):
        raise UsageError(f"{origin}: dialect must be auto, clickhouse or myscale, got {value!r}")
    if name == "device" and value not in ("auto", "cpu", "cuda", "mps"):
        raise UsageError(f"{origin}: device must be auto, cpu, cuda or mps, got {value!r}")
    return str(value)


def load_settings(flags: dict[str, Any] | None = None, env_file: Path | None = None) -> Settings:
    """Merge flags, environment, `.env` and defaults into one Settings."""
    settings = Settings()
    env_path = env_file if env_file is not None else Path(".env")
    dotenv = {k: v for k, v in dotenv_values(env_path).items() if v is not None} if env_path.is_file() else {}
    if PASSWORD_ENV in dotenv:
        raise UsageError(
            f"{env_path}: {PASSWORD_ENV} must come from the environment, not a file; remove it from {env_path}"
        )
    dotenv_dsn = dotenv.get("CLIPSQL_DSN")
    if dotenv_dsn and urlsplit(dotenv_dsn).password:
        raise UsageError(
            f"{env_path}: CLIPSQL_DSN contains a password; keep the DSN without it and set {PASSWORD_ENV} "
            "in the environment"
        )
    flags = flags or {}
    for name in _SETTING_NAMES:
        env_name = f"CLIPSQL_{name.upper()}"
        if flags.get(name) is not None:
            value, origin = flags[name], f"--{name.replace('_', '-')}"
        elif os.environ.get(env_name):
            value, origin = os.environ[env_name], env_name
        elif dotenv.get(env_name):
            value, origin = dotenv[env_name], f"{env_path}:{env_name}"
        else:
            continue
        setattr(settings, name, _coerce(name, value, origin))
        settings.sources_seen[name] = origin
    return settings


def redact(text: str) -> str:
    """Hide any password in a DSN-like string, for logs and reports."""
    parts = urlsplit(text)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    password = os.environ.get(PASSWORD_ENV)
    return text.replace(password, "***") if password else text
