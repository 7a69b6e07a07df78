"""One way to reach ClickHouse: a clickhouse-connect client made from a DSN.

`chdb://PATH` runs the ClickHouse engine in this process (the default, on disk under the data
directory); `http(s)://user@host:port/db` talks to a server or cluster. Everything above this
module is the same code for both. The one chDB-specific concern handled here is that only one
process may open an on-disk chDB path: its cryptic error becomes a `LockedError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from .config import Settings, load_settings, redact
from .errors import DatabaseError, LockedError
from .resources import sql_dir
from .sqlfile import SqlFile, fill_template, parse_sql_file

SCALE_OUT_HINT = (
    "chDB allows one process per database directory. Wait for the other process to finish, or, for "
    "concurrent readers and writers, run a ClickHouse server and point clipsql at it with "
    "--dsn http://user@host:8123/db (see README, 'Scaling to a ClickHouse server')."
)


def _chdb_path(dsn: str) -> Path | None:
    if not dsn.startswith("chdb:"):
        return None
    parts = urlsplit(dsn)
    location = parts.path if not parts.netloc else parts.netloc
    if location in ("", "memory", ":memory:"):
        return None
    return Path(location)


def open_client(dsn: str) -> Client:
    """Create a client for `dsn`, translating engine start-up errors into clear ones."""
    path = _chdb_path(dsn)
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
    try:
        # Arrow strings as strings for the whole session: asked per query, chDB would run two extra SETs each time.
        return clickhouse_connect.get_client(dsn=dsn, settings={"output_format_arrow_string_as_string": 1})
    except Exception as exc:  # clickhouse-connect raises several types here; all are start-up failures
        text = str(exc)
        if "EmbeddedServer" in text and "already initialized" in text:
            raise LockedError(
                f"this process already has another chDB database open ({text.split('path')[1].split(',')[0].strip()}); "
                f"close it before opening {path}"
            ) from None
        if "EmbeddedServer" in text:
            raise LockedError(f"the chDB database at {path} is in use by another process. {SCALE_OUT_HINT}") from None
        raise DatabaseError(f"cannot connect to {redact(dsn)}: {text}") from None


class Database:
    """A connected client plus the statements clipsql runs, loaded from `sql/`."""

    FACT_TTL_S = 60.0

    def __init__(self, client: Client, dsn: str) -> None:
        self.client = client
        self.dsn = dsn
        self._facts: dict[str, tuple[float, Any]] = {}

    def fact(self, key: str, compute: Callable[[], Any]) -> Any:
        """A slow-changing fact about the database (its dialect, whether a table has an index), computed
        at most once a minute: queries should not pay for catalogue lookups every time."""
        now = time.monotonic()
        cached = self._facts.get(key)
        if cached is None or (cached[0] != float("inf") and now - cached[0] > self.FACT_TTL_S):
            cached = (now, compute())
            self._facts[key] = cached
        return cached[1]

    def pin_fact(self, key: str, value: Any) -> None:
        """A fact the user stated (e.g. --dialect): never looked up."""
        self._facts[key] = (float("inf"), value)

    @property
    def is_embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    def close(self) -> None:
        self.client.close()

    # -- statements from files --------------------------------------------------------------------
    def sql(self, relative: str) -> SqlFile:
        return parse_sql_file(sql_dir() / relative)

    def run_file(
        self,
        relative: str,
        params: dict[str, Any] | None = None,
        template: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Run every statement of a file under `sql/` (DDL and maintenance)."""
        for statement in self.sql(relative).statements():
            if template:
                statement = fill_template(statement, template)
            self.command(statement, params, settings)

    def command(self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> Any:
        try:
            return self.client.command(sql, parameters=params or None, settings=settings)
        except ClickHouseError as exc:
            raise DatabaseError(f"{_first_line(sql)}: {_engine_message(exc)}") from None

    def query_arrow(
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> pa.Table:
        try:
            return self.client.query_arrow(sql, parameters=params or None, settings=settings, use_strings=True)
        except ClickHouseError as exc:
            raise DatabaseError(f"{_first_line(sql)}: {_engine_message(exc)}") from None

    def stream_arrow(
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Arrow record batches as the engine produces them, so a big result never sits in memory whole."""
        try:
            with self.client.query_arrow_stream(sql, parameters=params or None, settings=settings,
                                                use_strings=True) as stream:
                for block in stream:
                    yield from (block.to_batches() if isinstance(block, pa.Table) else [block])
        except ClickHouseError as exc:
            raise DatabaseError(f"{_first_line(sql)}: {_engine_message(exc)}") from None

    def query_rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        try:
            return self.client.query(sql, parameters=params or None).result_rows
        except ClickHouseError as exc:
            raise DatabaseError(f"{_first_line(sql)}: {_engine_message(exc)}") from None

    def insert_arrow(self, table: str, data: pa.Table, settings: dict[str, Any] | None = None) -> None:
        if data.num_rows == 0:
            return
        try:
            self.client.insert_arrow(table, data, settings=settings)
        except ClickHouseError as exc:
            raise DatabaseError(f"insert into {table}: {_engine_message(exc)}") from None

    # -- catalogue ---------------------------------------------------------------------------------
    def table_exists(self, name: str) -> bool:
        return bool(
            self.command(
                "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {name:String}",
                {"name": name},
            )
        )

    def tables(self, prefix: str = "") -> list[str]:
        rows = self.query_rows(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND startsWith(name, {p:String}) "
            "ORDER BY name",
            {"p": prefix},
        )
        return [r[0] for r in rows]

    def count(self, table: str) -> int:
        return int(self.command("SELECT count() FROM {t:Identifier}", {"t": table}))


def _first_line(sql: str) -> str:
    """The statement's start for messages, without the header comment."""
    line = " ".join(" ".join(row for row in sql.splitlines() if not row.lstrip().startswith("--")).split())
    return line[:80] + ("..." if len(line) > 80 else "")


def _engine_message(exc: Exception) -> str:
    text = str(exc).strip()
    # Keep the engine's own sentence, drop the stack trace and version trailer.
    for marker in ("DB::Exception:", "Exception:"):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    return text.split("Stack trace")[0].split("(version")[0].strip()


@contextmanager
def open_database(settings: Settings) -> Iterator[Database]:
    """Open the configured database for the duration of a command, then release it."""
    dsn = settings.database_dsn
    client = open_client(dsn)
    db = Database(client, dsn)
    if settings.dialect != "auto":
        from .dialect import get_dialect

        db.pin_fact("dialect", get_dialect(settings.dialect))
    try:
        yield db
    finally:
        db.close()


def connect(data_dir: str | os.PathLike[str] | None = None, dsn: str | None = None) -> Client:
    """The configured clickhouse-connect client, for notebooks: `pipeline.connect().query_df(...)`.

    Uses the same resolution as the CLI (arguments > CLIPSQL_* environment > .env > defaults).
    Close it when done if you use chDB: only one process may hold an on-disk chDB database.
    """
    settings = load_settings({"data_dir": data_dir, "dsn": dsn})
    return open_client(settings.database_dsn)
