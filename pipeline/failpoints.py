"""Named crash points for the kill tests.

`failpoint("load.before_swap")` does nothing unless the environment variable
`CLIPSQL_FAILPOINT` names that point (`NAME` or `NAME:N` for its N-th hit), in which case the
process kills itself with SIGKILL right there: no cleanup, no finally blocks, exactly like an
OOM kill or a power cut. The crash-resume tests use it to stop a run at every stage boundary
and check that the next run ends in the same state as an uninterrupted one.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter = Counter()


def failpoint(name: str) -> None:
    wanted = os.environ.get("CLIPSQL_FAILPOINT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
