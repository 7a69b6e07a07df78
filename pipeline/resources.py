"""Where the files that ship with clipsql live.

The SQL lives at the top of the repository (`sql/`, `queries/`) because that is where users
read and edit it; a built wheel carries copies inside the package (`pipeline/_sql`,
`pipeline/_queries`). Look in the package first, then in the checkout.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"none of {', '.join(map(str, candidates))} exists; is clipsql installed correctly?")


def sql_dir() -> Path:
    """The DDL and internal statements."""
    return _first_existing(PACKAGE_DIR / "_sql", PACKAGE_DIR.parent / "sql")


def queries_dir() -> Path:
    """The named analytics queries users run with `clipsql query NAME`."""
    return _first_existing(PACKAGE_DIR / "_queries", PACKAGE_DIR.parent / "queries")


def sample_dir() -> Path:
    """The offline sample dataset in the Unsplash Lite layout (see pipeline/sample/README.md)."""
    return PACKAGE_DIR / "sample"
