"""What training reads and writes: the photos' images (through the same cache and safe decoding
as `embed`), labels from the extracted tables, and vectors as embedding parts.

Images are fetched and turned into arrays by a bounded thread pool, like `embed` does; failures
are counted by reason, never fatal. Vectors go out as the same Parquet parts `embed` writes, so
a trained model's vectors are loaded and searched like any other model's.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from ..config import Settings
from ..errors import ClipsqlError, UsageError
from ..images import ImageError, ImageFetcher, decode_image, thumbnail_url
from ..store import EmbeddingStore

CLASS_PREFIX = "class:"


@dataclass
class LoadedImages:
    """Arrays made from the photos' images, in photo order, with what `embed` would record."""

    photo_ids: list[str]
    urls: list[str]
    sha256: list[str]
    arrays: np.ndarray
    failures: Counter = field(default_factory=Counter)


def read_photos(settings: Settings) -> pa.Table:
    path = settings.paths().parquet / "photos.parquet"
    if not path.exists():
        raise ClipsqlError(f"{path} does not exist; run `clipsql extract` (or `clipsql run`) first")
    return pq.read_table(path, columns=["photo_id", "photo_image_url"])


def in_holdout(photo_ids: list[str] | np.ndarray, fraction: float) -> np.ndarray:
    """Whether each photo belongs to the held-out part: a hash of its id, so training and `eval`
    agree on the split without storing it, and the split ignores labels and order."""
    if not 0 <= fraction < 1:
        raise UsageError(f"--holdout must be at least 0 and below 1, got {fraction}")
    if fraction == 0:
        return np.zeros(len(photo_ids), dtype=bool)
    values = np.array([int.from_bytes(hashlib.sha1(str(p).encode()).digest()[:4], "big") for p in photo_ids],
                      dtype=np.float64)
    return values / 2**32 < fraction


def sample_rows(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Row numbers of at most `limit` photos, a seeded random choice kept in photo order."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def load_images(settings: Settings, photos: pa.Table, make: Callable[[Image.Image], np.ndarray],
                target: int = 64, desc: str = "images") -> LoadedImages:
    """`make(image)` for every photo whose image can be fetched and decoded (in worker threads)."""
    fetcher = ImageFetcher(settings.paths().images, timeout=settings.http_timeout, retries=settings.http_retries,
                           pool_size=settings.workers)
    ids = photos["photo_id"].to_pylist()
    urls = photos["photo_image_url"].to_pylist()

    def one(index: int) -> tuple[int, np.ndarray | None, str, str]:
        url = thumbnail_url(urls[index])
        try:
            fetched = fetcher.fetch(url)
            return index, make(decode_image(fetched.data, target)), fetched.sha256, ""
        except ImageError as exc:
            return index, None, "", exc.reason

    kept: list[tuple[int, np.ndarray, str]] = []
    failures: Counter = Counter()
    with ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="train-fetch") as pool, \
            tqdm(total=len(ids), unit="img", desc=desc, disable=None) as bar:
        for index, array, sha, reason in pool.map(one, range(len(ids))):
            if array is None:
                failures[reason] += 1
            else:
                kept.append((index, array, sha))
            bar.update(1)
    if not kept:
        raise ClipsqlError(f"none of the {len(ids)} photos' images could be read ({dict(failures)}); "
                           "check the rejects of `clipsql embed`")
    return LoadedImages(
        photo_ids=[ids[i] for i, _, _ in kept], urls=[urls[i] for i, _, _ in kept],
        sha256=[s for _, _, s in kept], arrays=np.stack([a for _, a, _ in kept]), failures=failures,
    )


def write_vectors(store: EmbeddingStore, photo_ids: list[str], urls: list[str], sha256: list[str],
                  vectors: np.ndarray, encoder_kind: str, flush_rows: int = 4096) -> int:
    """Write vectors as the embedding parts `embed` would have written for these photos."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    store.ensure_meta(int(vectors.shape[1]), encoder_kind)
    now = pa.array([int(time.time() * 1000)] * len(photo_ids), pa.timestamp("ms", tz="UTC"))
    offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
    table = pa.table({
        "photo_id": photo_ids, "model": [store.model] * len(photo_ids),
        "embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel(), pa.float32())),
        "sha256": sha256, "image_url": urls, "embedded_at": now,
    })
    for offset in range(0, table.num_rows, flush_rows):
        store.write_embeddings(table.slice(offset, flush_rows))
    return table.num_rows


@dataclass
class StoredVectors:
    photo_ids: list[str]
    urls: list[str]
    sha256: list[str]
    vectors: np.ndarray


def stored_vectors(embeddings_dir: Path, model: str, photo_ids: pa.Array | None = None) -> StoredVectors:
    """A model's current vectors (newest per photo), optionally only for the given photos."""
    store = EmbeddingStore(embeddings_dir, model)
    table = store.read_all()
    if table.num_rows == 0:
        raise ClipsqlError(f"model {store.model} has no stored vectors in {embeddings_dir}; run "
                           f"`clipsql embed --model {model}` first")
    if photo_ids is not None:
        table = table.filter(pc.is_in(table["photo_id"], photo_ids))
    embedding = table["embedding"].combine_chunks()
    dims = pc.list_value_length(embedding)
    dim = int(store.meta()["dim"]) if store.meta() else int(pc.max(dims).as_py() or 0)
    ok = pc.fill_null(pc.equal(dims, dim), False)
    table = table.filter(ok)
    flat = pc.list_flatten(table["embedding"].combine_chunks()).to_numpy(zero_copy_only=False)
    return StoredVectors(table["photo_id"].to_pylist(), table["image_url"].to_pylist(),
                         table["sha256"].to_pylist(), flat.astype(np.float32).reshape(table.num_rows, dim))


def read_labels(settings: Settings, source: str = "collections") -> dict[str, list[str]]:
    """photo_id -> its labels. `collections`: the class collections an image-set source writes
    (`class:<label>`; any collection when there are none of those); `keywords`: every keyword."""
    parquet = settings.paths().parquet
    if source == "collections":
        path = parquet / "collections.parquet"
        if not path.exists():
            raise ClipsqlError(f"{path} does not exist; run `clipsql extract` first")
        table = pq.read_table(path, columns=["photo_id", "collection_id", "collection_title"])
        is_class = pc.starts_with(table["collection_id"], CLASS_PREFIX)
        if pc.any(is_class).as_py():
            table = table.filter(is_class)
            labels = pc.utf8_slice_codeunits(table["collection_id"], len(CLASS_PREFIX))
        else:
            labels = pc.coalesce(table["collection_title"], table["collection_id"])
    elif source == "keywords":
        path = parquet / "keywords.parquet"
        if not path.exists():
            raise ClipsqlError(f"{path} does not exist; run `clipsql extract` first")
        table = pq.read_table(path, columns=["photo_id", "keyword"])
        labels = pc.utf8_lower(table["keyword"])
    else:
        raise UsageError(f"--labels {source!r}: expected collections or keywords")
    result: dict[str, list[str]] = {}
    for photo_id, label in zip(table["photo_id"].to_pylist(), labels.to_pylist(), strict=True):
        if label:
            bucket = result.setdefault(photo_id, [])
            if label not in bucket:
                bucket.append(label)
    return result
