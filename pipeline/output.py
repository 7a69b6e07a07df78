"""Printing rows as an aligned table, JSON (one array of objects) or CSV.

`--format json` prints exactly one JSON document on stdout and nothing else there, so it can
be piped into jq or another program; messages and progress go to stderr.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import pyarrow as pa

FORMATS = ("table", "json", "csv")


def _rows(data: pa.Table | Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    if isinstance(data, pa.Table):
        return data.column_names, data.to_pylist()
    rows = list(data)
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    return columns, rows


def _json_value(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _cell(value: Any, width: int = 80) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_cell(v, 12) for v in value[:4]) + (", ..." if len(value) > 4 else "") + "]"
    else:
        text = str(value)
    text = text.replace("\n", " ").replace("\t", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def emit(data: pa.Table | Sequence[dict[str, Any]], fmt: str = "table", out: TextIO | None = None,
         title: str | None = None) -> None:
    out = out or sys.stdout
    columns, rows = _rows(data)
    if fmt == "json":
        json.dump([_json_value(row) for row in rows], out, ensure_ascii=False, indent=2)
        out.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else _json_value(row.get(c)) for c in columns])
        return
    if title:
        out.write(f"{title}\n")
    if not columns:
        out.write("(0 rows)\n")
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows) and rows for c in columns]
    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()
    out.write(line(columns) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write(line(row) + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
