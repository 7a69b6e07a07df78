"""The vectors every method is measured on, and the exact answers they are scored against.

Synthetic data is clustered (Gaussian blobs around random unit centres, then normalised):
uniformly random 512-d vectors have no neighbourhood structure and are an unrealistic worst
case for any ANN index. Queries are drawn from the same distribution but are not in the data
set. Ground truth is an exact numpy search, done in blocks so 1M x 512 fits in memory twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

DIM = 512
CLUSTERS = 1000
SEED = 20251122
SPREAD = 1.0  # norm of the noise around a unit centre: members of one cluster have cosine ~0.5, as in real embeddings


@dataclass
class Dataset:
    name: str
    vectors: np.ndarray  # (n, dim) float32, unit rows
    queries: np.ndarray  # (q, dim) float32, unit rows
    truth: np.ndarray  # (q, k) int64 row numbers of the exact top-k, nearest first
    ids: list[str] = field(default_factory=list)
    kind: str = "synthetic"

    @property
    def n(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def megabytes(self) -> float:
        return self.vectors.nbytes / 2**20


def clustered(n: int, queries: int, dim: int = DIM, clusters: int = CLUSTERS, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """`n` data and `queries` query vectors from the same fixed-seed mixture of Gaussian clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    total = n + queries
    out = np.empty((total, dim), dtype=np.float32)
    block = 65_536
    scale = np.float32(SPREAD / np.sqrt(dim))
    for start in range(0, total, block):
        stop = min(total, start + block)
        labels = rng.integers(0, clusters, stop - start)
        chunk = rng.standard_normal((stop - start, dim), dtype=np.float32)
        chunk *= scale
        chunk += centres[labels]
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start:stop] = chunk
    return out[:n], out[n:]


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = 131_072) -> np.ndarray:
    """Exact top-k by inner product (= cosine on unit vectors), nearest first, ties by row number."""
    q = queries.shape[0]
    best_scores = np.full((q, 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((q, 0), dtype=np.int64)
    for start in range(0, vectors.shape[0], block):
        scores = queries @ vectors[start:start + block].T
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        best_rows = np.concatenate([best_rows, part + start], axis=1)
        keep = np.lexsort((best_rows, -best_scores), axis=1)[:, :k] if best_scores.shape[1] > k else None
        if keep is not None:
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
            best_rows = np.take_along_axis(best_rows, keep, axis=1)
    order = np.lexsort((best_rows, -best_scores), axis=1)
    return np.take_along_axis(best_rows, order, axis=1)


def recall_at_k(found: list[list[int]] | np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k present in each answer's first k."""
    hits = 0
    for answer, exact in zip(found, truth, strict=True):
        hits += len(set(int(x) for x in list(answer)[:k]) & set(int(x) for x in exact[:k]))
    return round(hits / (len(truth) * k), 4)


def photo_ids(n: int, prefix: str = "s") -> list[str]:
    """Stable ids whose sort order is the row order, so row numbers map back without a lookup."""
    return [f"{prefix}{i:08d}" for i in range(n)]


def row_of(photo_id: str) -> int:
    return int(photo_id[1:])


def synthetic(n: int, queries: int, k: int) -> Dataset:
    vectors, query_vectors = clustered(n, queries)
    return Dataset(f"synthetic-{n}", vectors, query_vectors, exact_topk(vectors, query_vectors, k), photo_ids(n))


def embeddings_table(ids: list[str], vectors: np.ndarray, model: str) -> pa.Table:
    """The Arrow table `load` inserts into an embeddings table (columns of sql/tables/embeddings.sql)."""
    n, dim = vectors.shape
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), pa.float32())
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
    return pa.table({
        "photo_id": pa.array(ids, pa.string()),
        "model": pa.array([model] * n, pa.string()),
        "embedding": pa.ListArray.from_arrays(offsets, flat),
        "sha256": pa.array([""] * n, pa.string()),
        "image_url": pa.array([""] * n, pa.string()),
        "embedded_at": pa.array(np.zeros(n, dtype=np.int64), pa.timestamp("ms", tz="UTC")),
    })


def conversions_table(ids: list[str], rows: int, seed: int = SEED) -> tuple[pa.Table, np.ndarray]:
    """`rows` synthetic downloads over the photos (Zipf-like popularity), and downloads per photo."""
    rng = np.random.default_rng(seed + 1)
    n = len(ids)
    weights = 1.0 / np.arange(1, n + 1) ** 0.8
    weights = weights[rng.permutation(n)]
    weights /= weights.sum()
    photo_rows = rng.choice(n, size=rows, p=weights)
    keywords = np.array([f"kw{i}" for i in range(200)], dtype=object)
    countries = np.array(["DE", "US", "FR", "JP", "BR", "IN", ""], dtype=object)
    id_array = np.asarray(ids, dtype=object)
    table = pa.table({
        "converted_at": pa.array(rng.integers(1_500_000_000, 1_700_000_000, rows) * 1_000_000, pa.timestamp("us")),
        "conversion_type": pa.array(np.where(rng.random(rows) < 0.97, "download", "other").astype(object), pa.string()),
        "keyword": pa.array(keywords[rng.integers(0, len(keywords), rows)], pa.string()),
        "photo_id": pa.array(id_array[photo_rows], pa.string()),
        "anonymous_user_id": pa.array([""] * rows, pa.string()),
        "conversion_country": pa.array(countries[rng.integers(0, len(countries), rows)], pa.string()),
    })
    downloads = np.bincount(photo_rows[table["conversion_type"].to_numpy(zero_copy_only=False) == "download"],
                            minlength=n)
    return table, downloads
