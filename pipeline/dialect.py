"""What differs between the engines clipsql talks to, in one place.

- `clickhouse` (chDB, a ClickHouse server, ClickHouse Cloud): the `vector_similarity('hnsw', ...)`
  skip index, built with `ADD INDEX` + `MATERIALIZE INDEX`; queries order by `cosineDistance`.
- `myscale`: MyScale's `MSTG` vector index (`ADD VECTOR INDEX ... TYPE MSTG('metric_type=Cosine')`),
  built in the background and reported in `system.vector_indices` until its status is `Built`;
  queries order by `distance(...)`. MyScale's vector index exists only on MyScale Cloud (its open
  source release is no longer maintained); clipsql's MyScale statements are checked as text here,
  not run against a live MyScale.

Chosen with `--dialect` (env CLIPSQL_DIALECT) or detected: a server with `system.vector_indices`
is MyScale. Everything else (tables, IVF, exact scans, analytics) is the same SQL for both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .db import Database
from .errors import DatabaseError, UsageError
from .resources import sql_dir
from .sqlfile import fill_template, parse_sql_file


@dataclass(frozen=True)
class Dialect:
    name: str
    index_metric: str  # the distance function a query must ORDER BY for the index to answer it
    index_file: str  # sql/index/<file>: the statement that adds the vector index

    def index_statements(self, table: str, template: dict[str, Any]) -> list[str]:
        """The vector-index DDL with the table bound and the index arguments filled in."""
        statements = parse_sql_file(sql_dir() / self.index_file).statements()
        return [fill_template(s, template) for s in statements]

    def index_ready(self, db: Database, table: str) -> bool:
        """Whether `table` has a usable vector index (built, for MyScale)."""
        if self.name == "clickhouse":
            return bool(int(db.command(db.sql("search/has_vector_index.sql").text, {"table": table})))
        rows = db.query_rows(db.sql("index/myscale_index_status.sql").text, {"table": table})
        return bool(rows) and rows[0][0] == "Built"

    def build_index(self, db: Database, table: str, template: dict[str, Any], timeout_s: float = 3600.0) -> int:
        """Add and build the index on `table`; returns its size in bytes (0 if the engine does not say)."""
        for statement in self.index_statements(table, template):
            db.command(statement, {"table": table})
        if self.name == "clickhouse":
            db.command("ALTER TABLE {t:Identifier} MATERIALIZE INDEX vec", {"t": table}, settings={"mutations_sync": 2})
            return int(db.command(db.sql("index/index_size.sql").text, {"table": table}) or 0)
        deadline = time.monotonic() + timeout_s
        while True:  # MyScale builds in the background
            rows = db.query_rows(db.sql("index/myscale_index_status.sql").text, {"table": table})
            status = rows[0][0] if rows else "missing"
            if status == "Built":
                return 0
            if status in ("Error", "missing") or time.monotonic() > deadline:
                detail = rows[0][1] if rows and len(rows[0]) > 1 else ""
                raise DatabaseError(f"MyScale vector index on {table}: status {status} {detail}".strip())
            time.sleep(1.0)


CLICKHOUSE = Dialect("clickhouse", "cosineDistance", "index/add_vector_index.sql")
MYSCALE = Dialect("myscale", "distance", "index/myscale_add_vector_index.sql")
DIALECTS = {d.name: d for d in (CLICKHOUSE, MYSCALE)}


def detect_dialect(db: Database) -> Dialect:
    """MyScale if the server has its vector index catalogue, else ClickHouse."""
    has_vector_indices = db.query_rows(db.sql("index/has_vector_indices.sql").text)
    return MYSCALE if has_vector_indices and int(has_vector_indices[0][0]) else CLICKHOUSE


def get_dialect(name: str | None, db: Database | None = None) -> Dialect:
    if name in (None, "", "auto"):
        return detect_dialect(db) if db is not None else CLICKHOUSE
    if name not in DIALECTS:
        raise UsageError(f"--dialect must be auto, {' or '.join(DIALECTS)}, got {name!r}")
    return DIALECTS[name]
