"""`clipsql serve`: run the web app under uvicorn.

With chDB (the default) the server is one process holding the database for its lifetime, so
it is opened before uvicorn starts: a database in use elsewhere fails at once with exit code
75, not on the first request. With a ClickHouse server (an http(s) DSN) `--workers N` starts N
processes, each with its own connection; they find their settings in the CLIPSQL_*
environment, which this module sets from the resolved flags.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..config import Settings, load_settings
from ..errors import UsageError
from .app import create_app
from .backend import WebBackend

log = logging.getLogger("clipsql")
_MODEL_ENV = "CLIPSQL_SERVE_MODEL"


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, model: str | None = None,
          workers: int = 1) -> None:
    import uvicorn

    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    log_config = _log_config()
    if workers > 1:
        if settings.database_dsn.startswith("chdb:"):
            raise UsageError("--workers > 1 needs a ClickHouse server (--dsn http://...): chDB allows one process "
                             "per database directory")
        os.environ["CLIPSQL_DATA_DIR"] = str(settings.data_dir)
        if settings.dsn:
            os.environ["CLIPSQL_DSN"] = settings.dsn
        if model:
            os.environ[_MODEL_ENV] = model
        log.info("clipsql web app: http://%s:%d/ (%d worker processes)", host, port, workers)
        uvicorn.run("pipeline.web.server:app_from_environment", factory=True, host=host, port=port, workers=workers,
                    log_config=log_config)
        return
    backend = WebBackend.open(settings, model)
    try:
        models = backend.models()
        if not models:
            log.warning("no embeddings are loaded yet; run `clipsql demo` or `clipsql run` (the pages will say so)")
        log.info("clipsql web app: http://%s:%d/ (model %s; Ctrl-C stops it)", host, port,
                 backend.resolve(None).name if models else "none")
        uvicorn.run(create_app(backend), host=host, port=port, log_config=log_config)
    finally:
        backend.close()


def app_from_environment() -> Any:
    """The app for one worker process of `clipsql serve --workers N` (settings from CLIPSQL_*)."""
    settings = load_settings()
    return create_app(WebBackend.open(settings, os.environ.get(_MODEL_ENV) or None))


def _log_config() -> dict[str, Any]:
    """uvicorn's messages and access log on stderr, one line each."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "clipsql.web": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }
