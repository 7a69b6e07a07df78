"""load's insert path: chDB reads Arrow chunks through the Python() table function, a server gets
insert_arrow. Both must store exactly the values given, for every table clipsql loads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline import load
from pipeline.db import Database, open_client
from pipeline.schemas import EMBEDDING_SCHEMA, TABLE_SCHEMAS


def _column(field: pa.Field, n: int, rng: np.random.Generator) -> pa.Array:
    """Values that catch conversions: nulls, quotes, tabs, unicode, fractional microseconds, extremes."""
    if field.name == "photo_id":
        return pa.array([f"p{i:05d}" for i in range(n)])
    if pa.types.is_string(field.type):
        samples = ["", "tab\there", "quote ' and \" and \\", "unicode é ü 雪 😀", "line\nbreak"]
        return pa.array([samples[i % len(samples)] + str(i) for i in range(n)], field.type)
    if pa.types.is_timestamp(field.type):
        base = dt.datetime(2001, 2, 3, 4, 5, 6, 789012)
        values = [None if i % 4 == 1 else base + dt.timedelta(seconds=int(i) * 3601, microseconds=int(i)) for i in range(n)]
        return pa.array(values, pa.timestamp("us")).cast(field.type) if field.type.tz is None else pa.array(
            [v.replace(tzinfo=dt.timezone.utc) if v else None for v in values], field.type)
    if pa.types.is_boolean(field.type):
        return pa.array([None if i % 3 == 2 else bool(i % 2) for i in range(n)])
    if pa.types.is_integer(field.type):
        info = np.iinfo(field.type.to_pandas_dtype())
        values = [None if i % 5 == 3 else int(v) for i, v in enumerate(rng.integers(max(info.min, -2**31), min(info.max, 2**31), n))]
        return pa.array(values, field.type)
    if pa.types.is_floating(field.type):
        return pa.array([None if i % 5 == 4 else float(v) for i, v in enumerate(rng.standard_normal(n))], field.type)
    raise AssertionError(f"no generator for {field}")


def _table(schema: pa.Schema, n: int) -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table({f.name: _column(f, n, rng) for f in schema}, schema=schema)


def _vectors(n: int, dim: int) -> pa.Table:
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((n, dim)).astype(np.float32)
    if n > 5 and dim > 3:  # a subnormal-adjacent, a near-max and a negative zero must survive
        matrix[5, :3] = [np.float32(1e-38), np.float32(3.4e38), np.float32(-0.0)]
    now = int(dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone.utc).timestamp() * 1000)
    return pa.table({
        "photo_id": [f"p{i:05d}" for i in range(n)],
        "model": ["m/é"] * n,
        "embedding": pa.ListArray.from_arrays(pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32)),
                                              pa.array(matrix.ravel(), pa.float32())),
        "sha256": [f"{i:064x}" for i in range(n)],
        "image_url": [f"https://example.invalid/{i}?q=75&w=200" for i in range(n)],
        "embedded_at": pa.array([now + i for i in range(n)], pa.timestamp("ms", tz="UTC")),
    }, schema=EMBEDDING_SCHEMA)


@pytest.fixture
def db(tmp_path: Path):
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    database = Database(open_client(dsn), dsn)
    yield database
    database.close()


def _read(db: Database, table: str, columns: list[str]) -> pa.Table:
    return db.query_arrow(f"SELECT {', '.join(columns)} FROM {table} ORDER BY photo_id")


@pytest.mark.parametrize("name", sorted(TABLE_SCHEMAS))
def test_python_table_insert_stores_the_given_values(db: Database, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "INSERT_CHUNK", 7)  # several chunks, the last one short
    data = _table(TABLE_SCHEMAS[name], 30)
    db.run_file(f"tables/{name}.sql", {"table": "via_python"})
    db.run_file(f"tables/{name}.sql", {"table": "via_arrow"})
    load._insert(db, "via_python", data, "test")
    db.insert_arrow("via_arrow", data)
    got = _read(db, "via_python", data.column_names)
    reference = _read(db, "via_arrow", data.column_names)
    assert got.num_rows == 30
    for column in data.column_names:
        assert got[column].to_pylist() == reference[column].to_pylist(), column
        want = data.sort_by("photo_id")[column].to_pylist()
        if pa.types.is_string(data.schema.field(column).type) or pa.types.is_integer(data.schema.field(column).type):
            assert got[column].to_pylist() == want, column


def test_vectors_round_trip_bit_for_bit(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "INSERT_CHUNK", 16)
    data = _vectors(50, 24)
    db.run_file("tables/embeddings.sql", {"table": "emb", "dim": 24})
    load._insert(db, "emb", data, "test")
    got = _read(db, "emb", ["photo_id", "model", "embedding", "sha256", "image_url", "embedded_at"])
    want = np.array(data["embedding"].to_pylist(), dtype=np.float32)
    stored = np.array(got["embedding"].to_pylist(), dtype=np.float32)
    assert stored.tobytes() == want.tobytes()
    for column in ("photo_id", "model", "sha256", "image_url"):
        assert got[column].to_pylist() == data[column].to_pylist()
    assert [v.timestamp() for v in got["embedded_at"].to_pylist()] == [v.timestamp() for v in data["embedded_at"].to_pylist()]


def test_constraint_violations_are_database_errors(db: Database) -> None:
    data = _vectors(3, 8)
    db.run_file("tables/embeddings.sql", {"table": "emb", "dim": 9})
    with pytest.raises(load.DatabaseError, match="vector_len"):
        load._insert(db, "emb", data, "test")
    assert db.count("emb") == 0


def test_a_server_gets_insert_arrow(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-chDB DSN must not use the chDB-only Python() table function."""
    server = Database(db.client, "http://user@clickhouse.invalid:8123/db")
    sent: list[int] = []
    original = Database.insert_arrow

    def spy(self: Database, table: str, data: pa.Table, settings=None) -> None:
        sent.append(data.num_rows)
        original(self, table, data, settings)

    monkeypatch.setattr(Database, "insert_arrow", spy)
    monkeypatch.setattr(load, "INSERT_CHUNK", 20)
    server.run_file("tables/embeddings.sql", {"table": "emb", "dim": 4})
    server.command("SELECT 1")
    load._insert(server, "emb", _vectors(45, 4), "test")
    assert sent == [20, 20, 5]
    assert db.count("emb") == 45
    load._insert(db, "emb", _vectors(10, 4), "test")  # chDB path: no insert_arrow call
    assert sent == [20, 20, 5]
    assert db.count("emb") == 55


def test_empty_table_inserts_nothing(db: Database) -> None:
    db.run_file("tables/embeddings.sql", {"table": "emb", "dim": 4})
    load._insert(db, "emb", _vectors(0, 4), "test")
    assert db.count("emb") == 0
