"""TSV parsing: types, quoting, split headers, and bad rows quarantined with line numbers."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from pipeline.errors import SourceError
from pipeline.schemas import COLUMN_ALIASES, REQUIRED_COLUMNS, TABLE_SCHEMAS
from pipeline.tsv import parse_tsv

KEYWORDS_HEADER = "photo_id\tkeyword\tai_service_1_confidence\tai_service_2_confidence\tsuggested_by_user\n"


def parse(text: bytes | str, table: str = "keywords"):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return parse_tsv(
        data, TABLE_SCHEMAS[table], f"{table}.tsv000", REQUIRED_COLUMNS[table], COLUMN_ALIASES.get(table)
    )


def test_types_nulls_and_quoting() -> None:
    parsed = parse(KEYWORDS_HEADER + 'a\t"say ""cheese"""\t1.5\t\tt\nb\t"two\nlines"\t2\t3\tf\n')
    assert parsed.table.schema == TABLE_SCHEMAS["keywords"]
    rows = parsed.table.to_pylist()
    assert rows[0] == {
        "photo_id": "a",
        "keyword": 'say "cheese"',
        "ai_service_1_confidence": 1.5,
        "ai_service_2_confidence": None,
        "suggested_by_user": True,
    }
    assert rows[1]["keyword"] == "two\nlines" and rows[1]["suggested_by_user"] is False
    assert parsed.rejects.num_rows == 0


def test_timestamps_with_and_without_fraction() -> None:
    header = "photo_id\tcollection_id\tcollection_title\tphoto_collected_at\n"
    parsed = parse(
        header + "a\t1\tt\t2021-03-04 05:06:07\nb\t2\tt\t2021-03-04 05:06:07.250000\nc\t3\tt\t\n",
        "collections",
    )
    assert parsed.table["photo_collected_at"].to_pylist() == [
        dt.datetime(2021, 3, 4, 5, 6, 7),
        dt.datetime(2021, 3, 4, 5, 6, 7, 250000),
        None,
    ]


def test_bad_rows_are_rejected_with_line_and_reason() -> None:
    text = (
        KEYWORDS_HEADER
        + "a\tok\t1\t1\tt\n"  # line 2
        + 'b\t"x\ny"\t1\t1\tt\n'  # lines 3-4
        + "c\tnum\tabc\t1\tt\n"  # line 5: wrong type
        + "d\tshort\n"  # line 6: too few fields
        + "e\t\t1\t1\tt\n"  # line 7: required keyword empty
        + "f\tlong\t1\t1\tt\textra\n"  # line 8: too many fields
        + "g\tbool\t1\t1\tmaybe\n"  # line 9: not a boolean
        + "h\tok\t1\t1\tf\n"
    )  # line 10
    parsed = parse(text)
    assert parsed.table["photo_id"].to_pylist() == ["a", "b", "h"]
    rejects = {r["line"]: r["reason"] for r in parsed.rejects.to_pylist()}
    assert rejects == {
        5: "ai_service_1_confidence: abc is not a number",
        6: "expected 5 fields, found 2",
        7: "keyword is empty",
        8: "expected 5 fields, found 6",
        9: "suggested_by_user: maybe is not a boolean (t/f)",
    }
    assert parsed.rows_in == 8 == parsed.table.num_rows + parsed.rejects.num_rows


def test_non_utf8_rows_are_rejected_not_mangled() -> None:
    parsed = parse(KEYWORDS_HEADER.encode() + b"a\tcaf\xe9\t1\t1\tt\nb\tcafe\t1\t1\tt\n")
    assert parsed.table["photo_id"].to_pylist() == ["b"]
    assert parsed.rejects.to_pylist()[0]["reason"] == "bytes that are not UTF-8"
    assert parsed.rejects.to_pylist()[0]["line"] == 2


def test_missing_column_is_a_named_error() -> None:
    with pytest.raises(SourceError, match=r"keywords.tsv000: missing column\(s\) suggested_by_user"):
        parse("photo_id\tkeyword\tai_service_1_confidence\tai_service_2_confidence\na\tb\t1\t2\n")


def test_empty_file_is_a_named_error() -> None:
    with pytest.raises(SourceError, match="keywords.tsv000: the file is empty"):
        parse("")


def test_extra_columns_and_column_order_are_tolerated() -> None:
    text = "keyword\tphoto_id\tnew_col\tsuggested_by_user\tai_service_2_confidence\tai_service_1_confidence\nk\tp\tz\tt\t1\t2\n"
    parsed = parse(text)
    assert parsed.extra_columns == ["new_col"]
    assert parsed.table.to_pylist()[0]["ai_service_1_confidence"] == 2.0


def test_official_ddl_spelling_of_colour_columns() -> None:
    header = "photo_id\thex\tred\tgreen\tblue\tkeyword\tai_coverage\tai_score\n"
    parsed = parse(header + "p\tffffff\t255\t255\t255\twhite\t0.5\t0.7\n", "colors")
    assert parsed.table.to_pylist()[0]["coverage"] == 0.5
    assert parsed.table.schema.field("red").type == pa.int32()
