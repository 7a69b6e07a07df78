"""clipsql: image search as SQL.

Unsplash Lite -> CLIP image embeddings -> Parquet -> ClickHouse tables with vector indexes,
queried through bound-parameter SQL. The command-line tool is `clipsql`; from Python,
`pipeline.connect()` returns the configured clickhouse-connect client.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "connect"]


def connect(data_dir=None, dsn=None):  # noqa: ANN001, ANN201 - thin re-export, documented in db.connect
    """The configured clickhouse-connect client (chDB by default); see `pipeline.db.connect`."""
    from .db import connect as _connect

    return _connect(data_dir=data_dir, dsn=dsn)
