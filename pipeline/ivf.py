"""IVF: a k-means (Voronoi) partition of a model's vectors, so SQL can scan only nearby cells.

System 2's inverted-file search, kept in plain SQL: at load time clipsql clusters the unit
vectors with spherical k-means (cosine), stores the centroids in `ivf_<model>` and each vector's
cell in the embeddings table, whose sort key starts with the cell. A query ranks the centroids,
keeps the `nprobe` nearest cells and scans only their granules (`sql/search/candidates_ivf.sql`).
It needs no vector index, so it works on any ClickHouse (and MyScale) server.
"""

from __future__ import annotations

import math

import numpy as np

TRAIN_POINTS_PER_CELL = 64  # k-means learns from at most this many sampled vectors per cell
ASSIGN_BATCH = 32_768


def default_lists(n: int) -> int:
    """About sqrt(n) cells: each query then ranks sqrt(n) centroids and scans ~sqrt(n) rows per cell."""
    return max(1, min(4096, round(math.sqrt(n))))


def assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid (largest dot product) of every vector, in batches to bound memory."""
    cells = np.empty(len(vectors), dtype=np.uint32)
    for start in range(0, len(vectors), ASSIGN_BATCH):
        chunk = vectors[start:start + ASSIGN_BATCH]
        cells[start:start + len(chunk)] = np.argmax(chunk @ centroids.T, axis=1)
    return cells


def kmeans(vectors: np.ndarray, lists: int, *, iterations: int = 8, seed: int = 0) -> np.ndarray:
    """Spherical k-means centroids (unit length, float32), trained on a sample of `vectors`."""
    n = len(vectors)
    lists = max(1, min(lists, n))
    rng = np.random.default_rng(seed)
    sample_size = min(n, lists * TRAIN_POINTS_PER_CELL)
    sample = vectors[np.sort(rng.choice(n, size=sample_size, replace=False))].astype(np.float32, copy=False)
    centroids = sample[rng.choice(sample_size, size=lists, replace=False)].copy()
    for _ in range(iterations):
        cells = assign(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, cells, sample)
        counts = np.bincount(cells, minlength=lists)
        empty = counts == 0
        if empty.any():  # restart empty cells on random points so every cell is used
            sums[empty] = sample[rng.choice(sample_size, size=int(empty.sum()), replace=False)]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
    return centroids
