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
def _parse_timestamp_prefix(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Seconds-resolution parse of each value; null where the shape is right but the date is not
    (2021-02-30, month 13, hour 25), which a whole-column cast would reject all at once."""
    text = pc.replace_substring(column, "T", " ")
    length = pc.utf8_length(text)
    text = pc.if_else(pc.equal(length, 10), pc.binary_join_element_wise(text, " 00:00:00", ""), text)
    text = pc.if_else(pc.equal(length, 16), pc.binary_join_element_wise(text, ":00", ""), text)
    text = pc.utf8_slice_codeunits(text, 0, 19)
    parsed = pc.strptime(text, format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True)
    # strptime rolls impossible days over (Feb 30 -> Mar 2); a round trip must give the text back
    same = pc.equal(pc.strftime(parsed, format="%Y-%m-%d %H:%M:%S"), text)
    return pc.if_else(pc.fill_null(same, False), parsed, pa.scalar(None, parsed.type))


REJECT_SCHEMA = pa.schema([("file", pa.string()), ("line", pa.int64()), ("reason", pa.string()), ("raw", pa.string())])


@dataclass
class ParsedTsv:
    table: pa.Table
    rejects: pa.Table
    rows_in: int
    extra_columns: list[str] = field(default_factory=list)
    lines: pa.Array | None = None  # the line each row of `table` starts on


def _rejects(file: str, lines: list[int], reasons: list[str], raws: list[str]) -> pa.Table:
    return pa.table(
        {"file": [file] * len(lines), "line": lines, "reason": reasons, "raw": raws}, schema=REJECT_SCHEMA
    )


def _record_starts(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Byte offset and line number of every non-empty record (header included).

    A newline ends a record only outside quotes, i.e. after an even number of quote characters
    (an escaped quote is two of them, so parity still holds); empty lines are not records.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buffer == 10)
    quotes = np.flatnonzero(buffer == 34)
    ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0] if len(quotes) else newlines
    starts = np.concatenate([[0], ends + 1]).astype(np.int64)
    stops = np.concatenate([ends, [len(data)]]).astype(np.int64)
    length = stops - starts
    safe = np.minimum(starts, max(len(data) - 1, 0))
    blank = (length == 0) | ((length == 1) & (buffer[safe] == 13)) if len(data) else length == 0
    starts = starts[~blank]
    lines = np.searchsorted(newlines, starts) + 1
    return starts, lines.astype(np.int64)


def _find_line(data: bytes, raw: bytes, start: int) -> int:
    """Offset of the first whole line equal to `raw` at or after `start` (-1 if none)."""
    pos = start - 1
    while True:
        pos = data.find(raw, pos + 1)
        if pos < 0:
            return -1
        before_ok = pos == 0 or data[pos - 1] == 10
        after = pos + len(raw)
        after_ok = after == len(data) or data[after] in (10, 13)
        if before_ok and after_ok:
            return pos


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
    starts, start_lines = _record_starts(data)
    search_from = int(starts[1]) if len(starts) > 1 else len(data)

    def on_invalid(row: pacsv.InvalidRow) -> str:
        nonlocal search_from
        raw = row.text.encode("utf-8")
        pos = _find_line(data, raw, search_from)
        line = int(start_lines[np.searchsorted(starts, pos)]) if pos >= 0 else -1
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
    # Each record's first line: the records are the non-empty segments after the header, in order;
    # the ones pyarrow skipped as invalid are taken out by their line.
    record_lines = start_lines[1:]
    if bad_rows:
        record_lines = record_lines[~np.isin(record_lines, [line for line, _, _ in bad_rows])]
    lines = record_lines[:n] if len(record_lines) >= n else np.full(n, -1, dtype=np.int64)

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
        if pa.types.is_timestamp(target):
            bad = pc.or_(bad, pc.and_(pc.invert(empty), pc.is_null(_parse_timestamp_prefix(column))))
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
    good_lines = pa.array(lines[keep.to_numpy(zero_copy_only=False)] if n else np.zeros(0, dtype=np.int64))
    return ParsedTsv(table=table, rejects=all_rejects, rows_in=n + len(bad_rows), extra_columns=extra,
                     lines=good_lines)
