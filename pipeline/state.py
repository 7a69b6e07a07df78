"""What the last run used (source, limit, models), so later commands can default to it."""

from __future__ import annotations

from typing import Any

from .config import DataPaths
from .fsutil import atomic_write_json, read_json


def read_state(paths: DataPaths) -> dict[str, Any]:
    return read_json(paths.state_file, {}) or {}


def update_state(paths: DataPaths, **changes: Any) -> dict[str, Any]:
    state = read_state(paths)
    for key, value in changes.items():
        if key == "model" and value:
            models = [m for m in state.get("models", []) if m != value]
            state["models"] = [*models, value]
            state["last_model"] = value
        elif value is not None:
            state[key] = value
    atomic_write_json(paths.state_file, state)
    return state
