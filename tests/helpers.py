"""Small helpers shared by the end-to-end tests: run the CLI in-process, read its outputs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import main
from pipeline.db import Database, open_client

TEST_ENV = {"CLIPSQL_HTTP_TIMEOUT": "2", "CLIPSQL_HTTP_RETRIES": "2", "CLIPSQL_WORKERS": "8"}


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@contextmanager
def env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_cli(capsys, *args: str | Path) -> CliResult:
    """Run `clipsql ARGS` in this process (the real argument parsing, config and database)."""
    capsys.readouterr()
    with env(**TEST_ENV):
        code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


@contextmanager
def database(data_dir: Path) -> Iterator[Database]:
    dsn = f"chdb://{(data_dir / 'clickhouse').resolve()}"
    db = Database(open_client(dsn), dsn)
    try:
        yield db
    finally:
        db.close()


def table_counts(tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    return {name: len(frame) for name, frame in tables.items()}


def exact_knn(ids: Sequence[str], vectors: np.ndarray, query: np.ndarray, k: int, exclude: str = "") -> list[tuple[str, float]]:
    """Independent cosine kNN in float64 numpy, ties broken by id like the SQL."""
    v = vectors.astype(np.float64)
    q = query.astype(np.float64)
    distances = 1.0 - (v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))
    order = sorted((d, i) for i, d in zip(ids, distances, strict=True) if i != exclude)
    return [(i, float(d)) for d, i in order[:k]]
