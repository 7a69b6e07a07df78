"""SQL files: parse their documented header, bind parameters, fill DDL templates.

Queries use ClickHouse query parameters (`{k:UInt32}`) so that the same file runs unchanged in
`clickhouse-client --param_k=10`, and user values never become SQL text. A few DDL clauses
(vector index arguments) cannot take parameters; those use `${name}` template slots that
accept only integers and plain identifiers, checked here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import UsageError

_PLACEHOLDER = re.compile(r"\{(\w+):([^{}]+)\}")
_TEMPLATE_SLOT = re.compile(r"\$\{(\w+)\}")
_PARAM_LINE = re.compile(r"^--\s+(\w+)\s+([A-Za-z0-9_(), ]+?)(?:\s*=\s*(\S+))?\s{2,}(.+)$")
_SAFE_TEMPLATE_VALUE = re.compile(r"^[A-Za-z0-9_.']+$")


class Fragment(str):
    """SQL text that clipsql composed from its own `.sql` files (never from user values, which stay
    bound parameters); the one kind of text `fill_template` inserts as it is."""


@dataclass
class Param:
    name: str
    type: str
    default: str | None
    doc: str


@dataclass
class SqlFile:
    """One .sql file: its name, one-line summary, longer description and parameters."""

    name: str
    path: Path
    summary: str
    description: str
    params: list[Param] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    text: str = ""

    @property
    def placeholders(self) -> dict[str, str]:
        return {name: typ.strip() for name, typ in _PLACEHOLDER.findall(self.text)}

    def statements(self) -> list[str]:
        """Split on semicolons that end a line; our files keep one statement per such line."""
        body = "\n".join(line for line in self.text.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def parse_sql_file(path: Path) -> SqlFile:
    """The parsed file; parsed again only when it changes on disk (searches compose statements per query)."""
    stat = path.stat()
    return _parse_cached(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=512)
def _parse_cached(path: Path, mtime_ns: int, size: int) -> SqlFile:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    summary, description, params, columns = "", [], [], []
    in_params = False
    for i, line in enumerate(lines):
        if not line.startswith("--"):
            break
        content = line[2:].strip()
        if i == 0:
            summary = content.split(":", 1)[1].strip() if ":" in content else content
            continue
        if content.lower().startswith("parameters:"):
            in_params = True
            continue
        if content.lower().startswith("columns:"):
            in_params = False
            columns = [c.strip() for c in content.split(":", 1)[1].split(",") if c.strip()]
            continue
        if in_params:
            match = _PARAM_LINE.match(line.replace("\t", "  "))
            if match:
                params.append(Param(match[1], match[2].strip(), match[3], match[4].strip()))
                continue
            if not content:
                in_params = False
            continue
        description.append(content)
    return SqlFile(
        name=path.stem,
        path=path,
        summary=summary,
        description="\n".join(description).strip(),
        params=params,
        columns=columns,
        text=text,
    )


def convert_value(name: str, ch_type: str, raw: Any) -> Any:
    """Turn a command-line string into the Python value clickhouse-connect binds for `ch_type`."""
    if not isinstance(raw, str):
        return raw
    base = ch_type.strip()
    inner = re.sub(r"^(Nullable|LowCardinality)\((.*)\)$", r"\2", base)
    try:
        int_type = re.match(r"^(U?)Int(\d+)$", inner)
        if int_type:
            value = int(raw)
            bits = int(int_type[2])
            low, high = (0, 2**bits - 1) if int_type[1] else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            if not low <= value <= high:
                raise ValueError(f"out of range {low}..{high}")
            return value
        if re.match(r"^(Float\d+|Decimal.*)$", inner):
            return float(raw)
        if inner == "Bool":
            if raw.lower() in ("1", "true", "t", "yes"):
                return True
            if raw.lower() in ("0", "false", "f", "no"):
                return False
            raise ValueError("expected true or false")
        if inner.startswith("Array("):
            value = json.loads(raw)
            if not isinstance(value, list):
                raise ValueError("expected a JSON array")
            return value
    except (ValueError, json.JSONDecodeError) as exc:
        raise UsageError(f"parameter {name}: {raw!r} is not a valid {ch_type} ({exc})") from None
    return raw


def bind_parameters(sql_file: SqlFile, given: dict[str, Any]) -> dict[str, Any]:
    """Check given values against the file's placeholders, apply defaults, convert types."""
    placeholders = sql_file.placeholders
    unknown = sorted(set(given) - set(placeholders))
    if unknown:
        raise UsageError(
            f"query {sql_file.name}: unknown parameter(s) {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(placeholders)) or 'none'}"
        )
    # A default written as a quoted SQL string ('' or 'x') means that string.
    defaults = {p.name: (p.default[1:-1] if len(p.default) >= 2 and p.default[0] == p.default[-1] == "'" else p.default)
                for p in sql_file.params if p.default is not None}
    bound: dict[str, Any] = {}
    for name, ch_type in placeholders.items():
        if name in given:
            bound[name] = convert_value(name, ch_type, given[name])
        elif name in defaults:
            bound[name] = convert_value(name, ch_type, defaults[name])
        else:
            raise UsageError(f"query {sql_file.name}: missing parameter {name} ({ch_type}); pass --param {name}=...")
    return bound


def fill_template(text: str, values: dict[str, Any]) -> str:
    """Fill `${name}` slots with integers, plain identifiers or composed `Fragment`s; anything else is refused."""

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            raise KeyError(f"template slot ${{{name}}} has no value")
        value = values[name]
        if isinstance(value, Fragment):
            return str(value)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(f"template slot {name}: unsupported value {value!r}")
        text_value = str(value)
        if not _SAFE_TEMPLATE_VALUE.match(text_value) or text_value.count("'") not in (0, 2):
            raise ValueError(f"template slot {name}: refusing unsafe value {text_value!r}")
        return text_value

    return _TEMPLATE_SLOT.sub(replace, text)
