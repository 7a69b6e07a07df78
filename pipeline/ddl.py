"""`clipsql ddl`: the schema as a SQL script, for one server or a cluster, in either dialect.

The statements are the files in `sql/tables/` and `sql/index/`, with their `{table:Identifier}`
and `{dim:UInt32}` parameters filled with clipsql's own checked names and numbers, so the script
runs in `clickhouse-client --multiquery`. With `--cluster NAME` each data table becomes

- `local_<name>`: created `ON CLUSTER`, engine `Replicated*MergeTree` with the usual
  `{shard}`/`{replica}` macros, holding each shard's rows (and its own vector index);
- `<name>`: a `Distributed` table in front, sharded by `cityHash64(photo_id)`, that queries and
  inserts use. A vector query on it runs `ORDER BY distance LIMIT k` on every shard through the
  shard's index and merges the shards' top k.

Small catalogue tables (models, load_state, runs) are replicated to every node instead of
sharded. clipsql's own `load` builds tables on one server; on a cluster, create the schema with
this script and insert through the Distributed tables (see the README).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .dialect import Dialect
from .errors import UsageError
from .load import IndexParams
from .resources import sql_dir
from .sqlfile import parse_sql_file

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DATA_TABLES = ["photos", "keywords", "collections", "conversions", "colors", "photo_hashes"]
CATALOGUE_TABLES = ["models", "load_state", "runs"]
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)(\(([^)]*)\))?", re.IGNORECASE)


@dataclass
class ModelSchema:
    slug: str
    dim: int


def _identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise UsageError(f"{name!r} is not a plain identifier (letters, digits, underscore)")
    return f"`{name}`"


def _fill(statement: str, table: str | None = None, dim: int | None = None) -> str:
    if table is not None:
        statement = statement.replace("{table:Identifier}", _identifier(table))
    if dim is not None:
        statement = statement.replace("{dim:UInt32}", str(int(dim)))
    if re.search(r"\{\w+:[^{}]+\}", statement):
        raise UsageError(f"statement still has unbound parameters: {statement[:80]}")
    return statement


def _statements(relative: str, table: str | None = None, dim: int | None = None) -> list[str]:
    return [_fill(s, table, dim) for s in parse_sql_file(sql_dir() / relative).statements()]


_TABLE_CLAUSE = re.compile(r"^(\s*(?:CREATE TABLE IF NOT EXISTS|ALTER TABLE)\s+)(`?\w+`?)", re.IGNORECASE)


def _on_cluster(statement: str, name: str, cluster: str) -> str:
    """Put `ON CLUSTER c` after the table name of a CREATE TABLE or ALTER TABLE statement."""
    match = _TABLE_CLAUSE.match(statement)
    if not match or match[2].strip("`") != name:
        raise UsageError(f"cannot add ON CLUSTER to a statement about {name}: {statement[:60]}")
    return f"{match[1]}{match[2]} ON CLUSTER {_identifier(cluster)}{statement[match.end():]}"


def _replicated(statement: str, table: str, sharded: bool) -> str:
    path = f"/clickhouse/tables/{{shard}}/{{database}}/{table}" if sharded else f"/clickhouse/tables/{{database}}/{table}"

    def engine(match: re.Match[str]) -> str:
        arguments = [f"'{path}'", "'{replica}'"] + ([match[3]] if match[3] else [])
        return f"ENGINE = Replicated{match[1]}({', '.join(arguments)})"

    replaced, count = _ENGINE.subn(engine, statement)
    if count != 1:
        raise UsageError(f"cannot make {table} replicated: expected one MergeTree engine")
    return replaced


def _cluster_table(relative: str, name: str, cluster: str, dim: int | None = None) -> list[str]:
    local = f"local_{name}"
    out = []
    for statement in _statements(relative, local, dim):
        out.append(_on_cluster(_replicated(statement, local, sharded=True), local, cluster))
    out.append(f"CREATE TABLE IF NOT EXISTS {_identifier(name)} ON CLUSTER {_identifier(cluster)} "
               f"AS {_identifier(local)} ENGINE = Distributed({_identifier(cluster)}, currentDatabase(), "
               f"{_identifier(local)}, cityHash64(photo_id))")
    return out


def schema_statements(models: list[ModelSchema], dialect: Dialect, cluster: str | None = None,
                      params: IndexParams | None = None) -> list[str]:
    """Every CREATE (and vector index) statement of the schema, in order."""
    params = params or IndexParams()
    out: list[str] = []
    for name in DATA_TABLES:
        relative = f"tables/{name}.sql"
        out += _cluster_table(relative, name, cluster) if cluster else _statements(relative, name)
    for model in models:
        tables = {"embeddings": f"embeddings_{model.slug}", "ivf_centroids": f"ivf_{model.slug}",
                  "keyword_vectors": f"keyword_vectors_{model.slug}"}
        for file, name in tables.items():
            relative = f"tables/{file}.sql"
            if cluster and file == "embeddings":
                out += _cluster_table(relative, name, cluster, model.dim)
            elif cluster:  # small per-model tables: a full copy on every node
                out += [_on_cluster(_replicated(s, name, sharded=False), name, cluster)
                        for s in _statements(relative, name, model.dim)]
            else:
                out += _statements(relative, name, model.dim)
        index_table = f"local_{tables['embeddings']}" if cluster else tables["embeddings"]
        for statement in dialect.index_statements(index_table, params.template(model.dim)):
            statement = _fill(statement, index_table)
            out.append(_on_cluster(statement, index_table, cluster) if cluster else statement)
            if dialect.name == "clickhouse":
                materialize = f"ALTER TABLE {_identifier(index_table)} MATERIALIZE INDEX vec"
                out.append(_on_cluster(materialize, index_table, cluster) if cluster else materialize)
    for name in CATALOGUE_TABLES:
        statements = _statements(f"tables/{name}.sql")
        out += [_on_cluster(_replicated(s, name, sharded=False), name, cluster) if cluster else s
                for s in statements]
    merge = _statements("tables/photo_embeddings.sql")
    out += [_on_cluster(s, "photo_embeddings", cluster) if cluster else s for s in merge]
    return out


def render_script(statements: list[str]) -> str:
    return "".join(f"{statement.rstrip().rstrip(';')};\n\n" for statement in statements)
