"""Timing, memory and progress helpers shared by the benchmark sections.

The machine is shared and noisy, so every figure is a distribution: a timing is repeated and
reported as min / median (and p50 / p95 for per-query latencies), and comparisons are made as
ratios to peers measured in the same run rather than to numbers from another day.
"""

from __future__ import annotations

import gc
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_STARTED = time.perf_counter()


def progress(message: str) -> None:
    """One line on stderr with the elapsed time, so a long run shows where it is."""
    elapsed = time.perf_counter() - _STARTED
    print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


def stats(seconds: list[float]) -> dict[str, float]:
    """min / median / p50 / p95 / mean in milliseconds of a list of timings in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "n": int(ms.size),
        "min_ms": round(float(ms.min()), 3),
        "median_ms": round(float(np.median(ms)), 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def repeat(fn: Callable[[], Any], times: int, setup: Callable[[], Any] | None = None,
           collect: bool = True) -> tuple[list[float], Any]:
    """Run `fn` `times` times (each after `setup`, untimed); the timings and the last result.

    `collect` runs the garbage collector before each run so one run's garbage is not timed in
    the next; it costs tens of ms with torch loaded, so sub-millisecond timings turn it off.
    """
    timings: list[float] = []
    result = None
    for _ in range(times):
        result = None  # let the previous result be freed before the next run is measured
        if setup is not None:
            setup()
        if collect:
            gc.collect()
        started = time.perf_counter()
        result = fn()
        timings.append(time.perf_counter() - started)
    return timings, result


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class PeakMemory:
    """Samples RSS every few milliseconds while the block runs: peak growth over the start.

    ru_maxrss cannot be reset, so a second index build in the same process would otherwise
    report the first one's peak; chDB runs in-process, so its memory is in this RSS too.
    """

    interval_s: float = 0.005
    start: int = 0
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.start = self.peak = rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth_mb(self) -> float:
        return round((self.peak - self.start) / 2**20, 1)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            info["memory_gb"] = round(int(handle.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for name in ("numpy", "pyarrow", "chdb", "clickhouse_connect", "torch", "transformers", "hnswlib", "faiss"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except Exception:  # an optional peer that is not installed
            versions[name] = None
    info["versions"] = versions
    return info


def parse_size(text: str) -> int:
    """`25k`, `100k`, `1M`, `2000` -> an integer row count."""
    text = text.strip().lower()
    scale = 1
    if text.endswith("k"):
        scale, text = 1_000, text[:-1]
    elif text.endswith("m"):
        scale, text = 1_000_000, text[:-1]
    try:
        value = float(text) * scale
    except ValueError:
        raise ValueError(f"size {text!r} is not a number like 25k, 100k or 1M") from None
    if value < 100 or value != int(value):
        raise ValueError(f"size {text!r} must be a whole number of at least 100 rows")
    return int(value)


def size_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)
