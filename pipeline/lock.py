"""One writer at a time per data directory.

Writers (run, extract, embed, load, refresh, gc, demo) hold an exclusive `flock` on
`<data-dir>/.clipsql.lock`. The kernel releases it when the process dies, however it dies,
so a stale lock from a killed run never blocks the next one; the file also records who holds
it (pid, host, start time, command) so the second writer can say whom it is waiting for.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import LockedError

LOCK_NAME = ".clipsql.lock"


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("started", 0)))
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, running `{holder.get('command', '?')}` since {started}"


def read_holder(data_dir: Path) -> dict | None:
    try:
        text = (data_dir / LOCK_NAME).read_text()
        return json.loads(text) if text.strip() else None
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@contextmanager
def writer_lock(data_dir: Path, command: str) -> Iterator[None]:
    """Hold the data directory's writer lock, or raise LockedError naming the holder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(data_dir) or {}
            raise LockedError(
                f"another clipsql run holds {path}: {_describe(holder)}. Try again when it has finished."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                 "command": command}))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the flock
