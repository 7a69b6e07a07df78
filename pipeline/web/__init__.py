"""The web app of `clipsql serve` (system 5, SIMages): pick a key image, see its neighbours.

`create_app(WebBackend.open(settings))` builds the ASGI app; `serve()` runs it under uvicorn.
"""

from __future__ import annotations

from .app import create_app
from .backend import WebBackend
from .server import serve

__all__ = ["WebBackend", "create_app", "serve"]
