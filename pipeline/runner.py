"""`run` and `refresh`: extract + embed (per model) + load, recorded as one run.

Each run writes a JSON report (every stage's counts, rejects and duration, the dataset
version, the outcome) to `<data-dir>/reports/run-<time>.json` and appends it to the `runs`
table, so `clipsql status` and SQL can tell when the data was last refreshed and how it went.
A refresh is the same run with its defaults taken from the last one: same source, same
limit, every model embedded before. Only new or changed photos cost any work.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import pyarrow as pa

from .config import DEFAULT_MODEL, Settings, redact
from .db import open_database
from .embed import embed
from .errors import ClipsqlError, UsageError
from .extract import extract
from .failpoints import failpoint
from .fsutil import atomic_write_json
from .load import IndexParams, load
from .report import StageReport
from .sources import is_hf_source
from .state import read_state, update_state

log = logging.getLogger("clipsql")


def finish_stage(settings: Settings, report: StageReport, quiet: bool = False) -> StageReport:
    report.save(settings.paths().reports)
    log.info(report.summary())
    return report


def _record_run(settings: Settings, run: dict[str, Any]) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(run["started_at"]))
    atomic_write_json(settings.paths().reports / f"run-{stamp}-{run['run_id'][:8]}.json", run)
    atomic_write_json(settings.paths().reports / "run-latest.json", run)
    try:
        with open_database(settings) as db:
            db.run_file("tables/runs.sql")
            db.insert_arrow("runs", pa.table({
                "run_id": [run["run_id"]], "command": [run["command"]],
                "started_at": pa.array([int(run["started_at"] * 1000)], pa.timestamp("ms", tz="UTC")),
                "finished_at": pa.array([int(run["finished_at"] * 1000)], pa.timestamp("ms", tz="UTC")),
                "outcome": [run["outcome"]], "source": [run["source"]], "dataset_version": [run["dataset_version"]],
                "error": [run["error"]], "report": [json.dumps(run["stages"], default=str)],
            }))
    except ClipsqlError as exc:  # the run's own outcome matters more than its history row
        log.warning("could not record the run in the runs table: %s", exc)


def run_pipeline(
    settings: Settings,
    *,
    source: str | None = None,
    limit: int | None = None,
    models: list[str] | None = None,
    retry_failed: bool = False,
    index: IndexParams | None = None,
    command: str = "run",
    quiet: bool = False,
    collect_garbage: bool = False,
) -> list[StageReport]:
    source = source or settings.source
    models = models or [settings.model]
    if is_hf_source(source) and "model" not in settings.sources_seen and models == [settings.model]:
        models = [DEFAULT_MODEL]  # the published vectors: nothing to compute
    run: dict[str, Any] = {"run_id": uuid.uuid4().hex, "command": command, "started_at": time.time(),
                           "source": redact(source), "limit": limit, "models": models, "dataset_version": "",
                           "outcome": "failed", "error": "", "stages": []}
    reports: list[StageReport] = []
    try:
        extracted = finish_stage(settings, extract(settings, source, limit), quiet)
        reports.append(extracted)
        run["dataset_version"] = str(extracted.details.get("version", ""))
        update_state(settings.paths(), source=redact(source), limit=limit)  # credentials stay in the environment
        for model in models:
            reports.append(finish_stage(settings, embed(settings, model, retry_failed=retry_failed), quiet))
            update_state(settings.paths(), model=model)
        with open_database(settings) as db:
            reports.append(finish_stage(settings, load(db, settings, index), quiet))
            if collect_garbage:
                from .gc import collect_garbage as gc

                reports.append(finish_stage(settings, gc(db, settings), quiet))
        run["outcome"] = "ok"
    except ClipsqlError as exc:
        run["error"] = str(exc)
        raise
    except BaseException as exc:
        run["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        run["finished_at"] = time.time()
        run["duration_s"] = round(run["finished_at"] - run["started_at"], 3)
        run["stages"] = [r.to_dict() for r in reports]
        failpoint("run.before_record")
        _record_run(settings, run)
    return reports


def refresh_defaults(settings: Settings, source: str | None, limit: int | None,
                     model: str | None) -> tuple[str, int | None, list[str]]:
    """What a refresh does when not told: the last run's source, limit and models."""
    state = read_state(settings.paths())
    chosen_source = source or ("source" in settings.sources_seen and settings.source) or state.get("source") \
        or settings.source
    if "***" in chosen_source:
        raise UsageError(f"the last run's source {chosen_source} carried credentials, which clipsql does not store; "
                         "set CLIPSQL_SOURCE in the environment or pass --source")
    chosen_limit = limit if limit is not None else state.get("limit")
    if model:
        chosen_models = [model]
    elif "model" in settings.sources_seen:
        chosen_models = [settings.model]
    else:
        chosen_models = state.get("models") or [settings.model]
    return chosen_source, chosen_limit, chosen_models
