"""Errors that reach the user.

Every failure a user can cause or fix (bad input, a locked database, a missing model) is a
`ClipsqlError` carrying a message that names the input and an exit code, so the CLI can print
one clear line instead of a traceback and scripts can tell failures apart.
"""

from __future__ import annotations


class ClipsqlError(Exception):
    """A failure explained in words; `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(ClipsqlError):
    """The command line or a parameter value is wrong."""

    exit_code = 2


class SourceError(ClipsqlError):
    """The dataset source cannot be read: unreachable, corrupt, or not in the expected layout."""

    exit_code = 3


class ModelError(ClipsqlError):
    """The embedding model cannot be loaded or cannot do what was asked (e.g. text on an image-only model)."""

    exit_code = 4


class DatabaseError(ClipsqlError):
    """The database refused a statement or cannot be opened."""

    exit_code = 5


class NotFoundError(ClipsqlError):
    """A photo id, query name or table that the user named does not exist."""

    exit_code = 6


class LockedError(ClipsqlError):
    """Another process holds the database or the pipeline lock; try again later."""

    exit_code = 75  # EX_TEMPFAIL: cron wrappers can treat it as "skip this round"
