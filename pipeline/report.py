"""Stage reports: what went in, what came out, what was skipped or rejected and why.

Each stage fills one `StageReport`; it is printed at the end of the command and written as
JSON under `<data-dir>/reports/`, so an unattended run leaves a record of what it did.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fsutil import atomic_write_json


@dataclass
class StageReport:
    stage: str
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    rows_in: int = 0
    rows_out: int = 0
    skipped: int = 0
    rejected: int = 0
    rejects_by_reason: Counter = field(default_factory=Counter)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def finish(self) -> StageReport:
        self.finished_at = time.time()
        return self

    @property
    def duration_s(self) -> float:
        return round((self.finished_at or time.time()) - self.started_at, 3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "duration_s": self.duration_s,
            "in": self.rows_in,
            "out": self.rows_out,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "rejects_by_reason": dict(self.rejects_by_reason.most_common()),
            "details": self.details,
            "notes": self.notes,
        }

    def summary(self) -> str:
        line = (
            f"{self.stage}: in {self.rows_in}, out {self.rows_out}, skipped {self.skipped}, "
            f"rejected {self.rejected} ({self.duration_s:.1f} s)"
        )
        if self.rejects_by_reason:
            reasons = ", ".join(f"{reason} {count}" for reason, count in self.rejects_by_reason.most_common(6))
            line += f"\n  rejects: {reasons}"
        for note in self.notes:
            line += f"\n  {note}"
        return line

    def save(self, reports_dir: Path) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.started_at))
        path = reports_dir / f"{self.stage}-{stamp}-{int(self.started_at * 1000) % 1000:03d}.json"
        atomic_write_json(path, self.to_dict())
        atomic_write_json(reports_dir / f"{self.stage}-latest.json", self.to_dict())
        return path
