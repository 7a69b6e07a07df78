"""`run` = extract + embed + load, with each stage's report printed and saved."""

from __future__ import annotations

import sys

from .config import Settings
from .db import open_database
from .embed import embed
from .extract import extract
from .load import IndexParams, load
from .report import StageReport
from .sources import is_hf_source
from .state import update_state


def finish_stage(settings: Settings, report: StageReport) -> StageReport:
    report.save(settings.paths().reports)
    print(report.summary(), file=sys.stderr)
    return report


def run_pipeline(
    settings: Settings,
    *,
    source: str | None = None,
    limit: int | None = None,
    model: str | None = None,
    retry_failed: bool = False,
    index: IndexParams | None = None,
) -> list[StageReport]:
    source = source or settings.source
    model = model or settings.model
    reports = [finish_stage(settings, extract(settings, source, limit))]
    update_state(settings.paths(), source=source, limit=limit)
    if is_hf_source(source) and "model" not in settings.sources_seen:
        from .config import DEFAULT_MODEL

        model = DEFAULT_MODEL  # the published vectors; nothing to compute
    reports.append(finish_stage(settings, embed(settings, model, retry_failed=retry_failed)))
    update_state(settings.paths(), model=model)
    with open_database(settings) as db:
        reports.append(finish_stage(settings, load(db, settings, index)))
    return reports
