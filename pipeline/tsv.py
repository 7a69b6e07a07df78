"""Parse one Unsplash Lite TSV file into a typed Arrow table, quarantining bad rows.

The files are tab-separated with a header row and CSV-style double-quote quoting. Parsing is
columnar: pyarrow reads every column as text, then each typed column is validated with one
vectorised regular expression and cast in one call. Rows that fail (wrong field count, a value
of the wrong type, an empty required field, bytes that are not UTF-8) are not loaded; they are
returned with their line number and reason so extract can write them to a rejects file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .errors import SourceError

_VALID = {
    "int32": r"^-?\d{1,9}$",
    "int64": r"^-?\d{1,18}$",
    "double": r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$",
    "float": r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$",
    "bool": r"^(?i)(t|f|true|false|0|1)$",
    "timestamp[us]": r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?$",
}
_TYPE_WORDS = {
    "int32": "an integer",
    "int64": "an integer",
    "double": "a number",
    "float": "a number",
    "bool": "a boolean (t/f)",
    "timestamp[us]": "a timestamp (YYYY-MM-DD hh:mm:ss)",
}
REJECT_SCHEMA = pa.schema([("file", pa.string()), ("line", pa.int64()), ("reason", pa.string()), ("raw", pa.string())])


@dataclass
class ParsedTsv:
    table: pa.Table
    rejects: pa.Table
    rows_in: int
    extra_columns: list[str] = field(default_factory=list)


def _rejects(file: str, lines: list[int], reasons: list[str], raws: list[str]) -> pa.Table:
    return pa.table(
        {"file": [file] * len(lines), "line": lines, "reason": reasons, "raw": raws}, schema=REJECT_SCHEMA
    )


def _line_of_offset(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def parse_tsv(
    data: bytes,
    schema: pa.Schema,
    name: str,
    required: list[str] | None = None,
    aliases: dict[str, str] | None = None,
) -> ParsedTsv:
    """Parse `data` (the bytes of file `name`) into a table with `schema`."""
    if not data.strip():
        raise SourceError(f"{name}: the file is empty (expected a header row with {len(schema)} columns)")
    try:
        text_ok = True
        data.decode("utf-8")
    except UnicodeDecodeError:
        text_ok = False
        data = data.decode("utf-8", errors="replace").encode("utf-8")

    header_end = data.find(b"\n")
    header = data[: header_end if header_end >= 0 else len(data)].decode("utf-8").rstrip("\r").split("\t")
    header = [h.strip().strip('"') for h in header]
    if aliases and any(h in aliases for h in header):
        header = [aliases.get(h, h) for h in header]
        data = "\t".join(header).encode("utf-8") + (data[header_end:] if header_end >= 0 else b"")
        header_end = data.find(b"\n")
    missing = [c for c in schema.names if c not in header]
    if missing:
        raise SourceError(
            f"{name}: missing column(s) {', '.join(missing)} in the header; found {', '.join(header)}"
        )
    extra = [c for c in header if c not in schema.names]

    bad_rows: list[tuple[int, str, str]] = []
    search_from = max(header_end, 0)

    def on_invalid(row: pacsv.InvalidRow) -> str:
        nonlocal search_from
        raw = row.text.encode("utf-8")
        pos = data.find(raw, search_from)
        line = _line_of_offset(data, pos) if pos >= 0 else -1
        if pos >= 0:
            search_from = pos + len(raw)
        bad_rows.append(
            (line, f"expected {row.expected_columns} fields, found {row.actual_columns}", row.text[:2000])
        )
        return "skip"

    try:
        raw_table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter="\t", quote_char='"', double_quote=True, newlines_in_values=True, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header}, strings_can_be_null=False, include_columns=schema.names
            ),
        )
    except pa.ArrowInvalid as exc:
        raise SourceError(f"{name}: cannot be parsed as TSV ({exc})") from None

    n = raw_table.num_rows
    # Line number of each parsed record: header is line 1; quoted newlines and skipped rows shift it.
    newlines = np.zeros(n, dtype=np.int64)
    for column_name in schema.names:
        if pa.types.is_string(schema.field(column_name).type):
            counts = pc.count_substring(raw_table[column_name], "\n")
            newlines += counts.to_numpy(zero_copy_only=False).astype(np.int64)
    lines = 2 + np.concatenate([[0], np.cumsum(newlines + 1)[:-1]]) if n else np.zeros(0, dtype=np.int64)
    for bad_line, _, raw in sorted(bad_rows):
        if bad_line > 0:
            lines[lines >= bad_line] += 1 + raw.count("\n")

    reasons = pa.nulls(n, pa.string())
    for column_name in schema.names:
        target = schema.field(column_name).type
        column = raw_table[column_name]
        empty = pc.equal(column, "")
        if required and column_name in required:
            reasons = pc.if_else(pc.and_(pc.is_null(reasons), empty), f"{column_name} is empty", reasons)
        pattern = _VALID.get(str(target))
        if pattern is None:
            continue
        bad = pc.and_(pc.invert(empty), pc.invert(pc.match_substring_regex(column, pattern)))
        if pc.any(bad).as_py():
            message = pc.binary_join_element_wise(
                f"{column_name}: ", pc.utf8_slice_codeunits(column, 0, 60), f" is not {_TYPE_WORDS[str(target)]}", ""
            )
            reasons = pc.if_else(pc.and_(pc.is_null(reasons), bad), message, reasons)
    if not text_ok:
        has_replacement = pa.array(np.zeros(n, dtype=bool))
        for column_name in schema.names:
            if pa.types.is_string(schema.field(column_name).type) or str(schema.field(column_name).type) in _VALID:
                has_replacement = pc.or_(has_replacement, pc.match_substring(raw_table[column_name], "\ufffd"))
        reasons = pc.if_else(pc.and_(pc.is_null(reasons), has_replacement), "bytes that are not UTF-8", reasons)

    keep = pc.is_null(reasons)
    good = raw_table.filter(keep)
    columns = {}
    for column_name in schema.names:
        target = schema.field(column_name).type
        column = good[column_name]
        if pa.types.is_string(target):
            columns[column_name] = column
            continue
        as_null = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
        if pa.types.is_boolean(target):
            lowered = pc.utf8_lower(as_null)
            columns[column_name] = pc.is_in(lowered, pa.array(["t", "true", "1"])).cast(pa.bool_())
            columns[column_name] = pc.if_else(pc.is_null(as_null), pa.scalar(None, pa.bool_()), columns[column_name])
        else:
            columns[column_name] = pc.cast(as_null, target)
    table = pa.table(columns, schema=schema)

    rejected = raw_table.filter(pc.invert(keep))
    reject_lines = [int(x) for x in lines[~keep.to_numpy(zero_copy_only=False)]] if n else []
    reject_raw = [
        "\t".join(str(v) for v in row.values()) for row in rejected.slice(0, 10_000).to_pylist()
    ] + [""] * max(0, rejected.num_rows - 10_000)
    typed_rejects = _rejects(name, reject_lines, pc.filter(reasons, pc.invert(keep)).to_pylist(), reject_raw)
    field_rejects = _rejects(
        name, [r[0] for r in bad_rows], [r[1] for r in bad_rows], [r[2] for r in bad_rows]
    )
    all_rejects = pa.concat_tables([field_rejects, typed_rejects]).sort_by("line")
    return ParsedTsv(table=table, rejects=all_rejects, rows_in=n + len(bad_rows), extra_columns=extra)
