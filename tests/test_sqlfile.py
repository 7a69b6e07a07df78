"""SQL files: documented headers, parameter binding, safe DDL templates."""

from __future__ import annotations

import pytest

from pipeline.errors import UsageError
from pipeline.queries import list_queries
from pipeline.resources import sql_dir
from pipeline.sqlfile import bind_parameters, convert_value, fill_template, parse_sql_file


def test_every_query_documents_each_parameter_it_uses() -> None:
    queries = list_queries()
    assert {"similar_downloads", "popular_candidate_keywords"} <= {q.name for q in queries}
    for query in queries:
        assert query.summary, f"{query.name} has no summary line"
        documented = {p.name for p in query.params}
        assert set(query.placeholders) == documented, query.name
        assert query.columns, f"{query.name} does not list its columns"


def test_every_sql_file_parses_and_has_a_header() -> None:
    for path in sql_dir().rglob("*.sql"):
        parsed = parse_sql_file(path)
        assert parsed.summary, path
        assert parsed.statements(), path


def test_defaults_and_conversion() -> None:
    query = parse_sql_file(next(q.path for q in list_queries() if q.name == "popular_candidate_keywords"))
    bound = bind_parameters(query, {"photo_id": "abc", "table": "m"})
    assert bound == {"photo_id": "abc", "table": "m", "k": 10, "n": 5}
    assert bind_parameters(query, {"photo_id": "x", "table": "m", "k": "3"})["k"] == 3


def test_binding_errors_name_the_parameter() -> None:
    query = parse_sql_file(next(q.path for q in list_queries() if q.name == "similar_downloads"))
    with pytest.raises(UsageError, match="missing parameter photo_id"):
        bind_parameters(query, {"table": "m"})
    with pytest.raises(UsageError, match="unknown parameter"):
        bind_parameters(query, {"photo_id": "a", "table": "m", "kk": "1"})
    with pytest.raises(UsageError, match="parameter k: '-1' is not a valid UInt32"):
        bind_parameters(query, {"photo_id": "a", "table": "m", "k": "-1"})
    with pytest.raises(UsageError, match="not a valid UInt32"):
        bind_parameters(query, {"photo_id": "a", "table": "m", "k": "ten"})


def test_convert_value_types() -> None:
    assert convert_value("v", "Array(Float32)", "[1, 2.5]") == [1, 2.5]
    assert convert_value("b", "Bool", "true") is True
    assert convert_value("f", "Float64", "0.25") == 0.25
    assert convert_value("s", "String", "'; DROP TABLE photos; --") == "'; DROP TABLE photos; --"


def test_template_refuses_anything_but_numbers_and_names() -> None:
    assert fill_template("f(${a}, ${b})", {"a": 512, "b": "'bf16'"}) == "f(512, 'bf16')"
    for bad in ("1); DROP TABLE x; --", "a b", "'x", True, [1]):
        with pytest.raises((ValueError, TypeError)):
            fill_template("${a}", {"a": bad})
    with pytest.raises(KeyError):
        fill_template("${missing}", {})
