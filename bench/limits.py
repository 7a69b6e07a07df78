"""The machine's own limits, measured in the same run: memory bandwidth and sgemm throughput.

An exact scan cannot beat reading every vector once (memory bandwidth), and an embedding
model cannot beat the matrix-multiply rate of the cores (sgemm GFLOP/s); clipsql's figures
are put next to these so "slow" means "far from what the hardware can do".
"""

from __future__ import annotations

import numpy as np

from .common import repeat


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> dict[str, float]:
    """Read bandwidth (a sum over the array) and copy bandwidth (read + write), best of `repeats`."""
    values = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    target = np.empty_like(values)
    read_times, _ = repeat(lambda: float(values.sum()), repeats)
    copy_times, _ = repeat(lambda: np.copyto(target, values), repeats)
    size = values.nbytes / 1e9
    return {
        "array_mb": megabytes,
        "read_gb_s": round(size / min(read_times), 2),
        "read_gb_s_median": round(size / float(np.median(read_times)), 2),
        "copy_gb_s": round(2 * size / min(copy_times), 2),
        "copy_gb_s_median": round(2 * size / float(np.median(copy_times)), 2),
    }


def sgemm(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """float32 matmul GFLOP/s (2 n^3 flops) through numpy's BLAS, all cores."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up the BLAS threads
    times, _ = repeat(lambda: a @ b, repeats)
    flops = 2.0 * n**3
    return {"n": n, "gflop_s": round(flops / min(times) / 1e9, 1),
            "gflop_s_median": round(flops / float(np.median(times)) / 1e9, 1)}
