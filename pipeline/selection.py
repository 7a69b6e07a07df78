"""Selections: which photos a search, a join or a gallery is about, written `KIND:VALUE`.

A selection is a conjunction of parts such as `keyword:mountain`, `country:Iceland` or
`collection:Nature`. Each kind is a one-expression SQL file in `sql/selections/` with a bound
`{value:Type}` parameter, so user values never become SQL text; clipsql renames the
parameter per part and joins the parts with AND. `where:EXPR` (an expression over the photos
table's columns) is for people who can already run `clipsql sql`; the web server refuses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError
from .resources import sql_dir
from .sqlfile import Fragment, convert_value, parse_sql_file

RAW_SQL_KIND = "where"
_ALIASES = {"min-downloads": "min_downloads", "tag": "keyword", "user": "photographer", "id": "ids"}
_FORBIDDEN_IN_RAW = re.compile(r";|\b(INSERT|ALTER|DROP|TRUNCATE|CREATE|ATTACH|DETACH|RENAME|SYSTEM|KILL|GRANT)\b",
                               re.IGNORECASE)


def selection_kinds() -> list[str]:
    """The kinds a selection part may have, from the files in sql/selections/."""
    return sorted(path.stem for path in (sql_dir() / "selections").glob("*.sql"))


@dataclass(frozen=True)
class Part:
    kind: str
    value: Any
    text: str  # as the user wrote it, for messages


@dataclass
class Selection:
    """A conjunction of parts; empty means every photo."""

    parts: list[Part] = field(default_factory=list)

    @property
    def is_all(self) -> bool:
        return not self.parts

    def describe(self) -> str:
        return " and ".join(p.text for p in self.parts) or "all photos"

    def __and__(self, other: Selection) -> Selection:
        return Selection([*self.parts, *other.parts])

    def condition(self, prefix: str = "s") -> tuple[Fragment, dict[str, Any]]:
        """The SQL condition on `photo_id` and its bound parameters; names start with `prefix`."""
        if not self.parts:
            return Fragment("1"), {}
        clauses, params = [], {}
        for index, part in enumerate(self.parts):
            name = f"{prefix}{index}"
            if part.kind == RAW_SQL_KIND:
                clauses.append(f"(photo_id IN (SELECT photo_id FROM photos WHERE {part.value}))")
                continue
            fragment = parse_sql_file(sql_dir() / "selections" / f"{part.kind}.sql").statements()[0]
            clauses.append("(" + fragment.replace("{value:", "{" + name + ":") + ")")
            params[name] = part.value
        return Fragment(" AND ".join(clauses)), params


def parse_part(text: str, *, allow_sql: bool = False) -> Part:
    kind, sep, raw = text.partition(":")
    kind = _ALIASES.get(kind.strip().lower(), kind.strip().lower())
    kinds = ", ".join(selection_kinds() + ([RAW_SQL_KIND] if allow_sql else []))
    if not sep or not raw.strip():
        if kind == "all" and not raw.strip():
            return Part("all", None, "all")
        raise UsageError(f"selection {text!r}: expected KIND:VALUE with KIND one of {kinds}, or all")
    raw = raw.strip()
    if kind == RAW_SQL_KIND:
        if not allow_sql:
            raise UsageError(f"selection {text!r}: raw SQL selections (where:...) are not allowed here")
        if _FORBIDDEN_IN_RAW.search(raw):
            raise UsageError(f"selection {text!r}: a where: expression may not contain ';' or statements")
        return Part(kind, raw, text)
    if kind not in selection_kinds():
        raise UsageError(f"selection {text!r}: unknown kind {kind!r}; use one of {kinds}")
    fragment = parse_sql_file(sql_dir() / "selections" / f"{kind}.sql")
    value_type = fragment.placeholders["value"]
    if value_type.startswith("Array("):
        value: Any = [v.strip() for v in raw.split(",") if v.strip()]
    else:
        value = convert_value(text, value_type, raw)
    if value_type == "Date" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        raise UsageError(f"selection {text!r}: expected a date as YYYY-MM-DD")
    return Part(kind, value, text)


def parse_selection(texts: str | list[str] | None, *, allow_sql: bool = False) -> Selection:
    """Parse one or several `KIND:VALUE` texts; several texts must all hold."""
    if texts is None:
        return Selection()
    items = [texts] if isinstance(texts, str) else list(texts)
    parts = [parse_part(item.strip(), allow_sql=allow_sql) for item in items if item.strip()]
    return Selection([part for part in parts if part.kind != "all"])
