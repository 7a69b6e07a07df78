"""Named analytics queries: the `.sql` files in `queries/`, run with bound parameters.

The files are plain ClickHouse SQL with `{name:Type}` parameters, so they run unchanged in
`clickhouse-client --param_name=...`. clipsql adds two conveniences: parameters with a default
in the header may be left out, and `table` (a model's embeddings table) is filled in from
`--param model=M` or, by default, the model searches use.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .config import Settings
from .db import Database
from .errors import NotFoundError, UsageError
from .resources import queries_dir
from .search import photo_vector, resolve_model
from .sqlfile import SqlFile, bind_parameters, parse_sql_file


def list_queries() -> list[SqlFile]:
    return [parse_sql_file(path) for path in sorted(queries_dir().glob("*.sql"))]


def get_query(name: str) -> SqlFile:
    path = queries_dir() / f"{name}.sql"
    if not path.is_file() or "/" in name or "\\" in name:
        names = ", ".join(q.name for q in list_queries())
        raise NotFoundError(f"no query named {name!r}; available: {names} (clipsql query --list)")
    return parse_sql_file(path)


def parse_param_args(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--param {pair!r}: expected KEY=VALUE")
        key, value = pair.split("=", 1)
        params[key.strip()] = value
    return params


def run_query(db: Database, settings: Settings, name: str, params: dict[str, Any]) -> pa.Table:
    """Run a named query. `table` (the model's embeddings table) is filled in from `--param model=M` or the
    model searches use, so users name models, not tables."""
    query = get_query(name)
    given = dict(params)
    placeholders = query.placeholders
    model = None
    if "table" in placeholders and "table" not in given:
        model = resolve_model(db, settings, given.pop("model", None))
        given["table"] = model.table
    bound = bind_parameters(query, given)
    if bound.get("photo_id") and model is not None:
        photo_vector(db, model, bound["photo_id"])  # a clear error if the photo has no vector
    return db.query_arrow(query.text.rstrip().rstrip(";"), bound)
