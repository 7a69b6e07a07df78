"""Stage 2, embed: photos.parquet -> image vectors per model, as append-only Parquet parts.

Thumbnails are fetched by a bounded pool of threads, decoded and preprocessed in those threads
while the main thread runs the model on full batches, so network, decoding and inference
overlap. Work already done is never repeated: photos with a vector for this model are skipped,
photos that failed are skipped unless `--retry-failed`, and fetched bytes stay in the image
cache. Vectors and failures are flushed to disk every few hundred images, so a killed run
loses at most that much compute and no downloads.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from .config import Settings
from .encoders import Encoder, load_encoder
from .errors import ClipsqlError
from .failpoints import failpoint
from .images import ImageError, ImageFetcher, decode_image, thumbnail_url
from .keywords import embed_keywords, missing_keywords
from .phash import phash64
from .report import StageReport
from .store import EmbeddingStore, HashStore

FLUSH_SECONDS = 30.0


@dataclass
class Prepared:
    index: int
    pixels: np.ndarray | None = None
    sha256: str = ""
    error: ImageError | None = None
    from_cache: bool = False
    phash: int = 0


def read_photos(settings: Settings) -> pa.Table:
    path = settings.paths().parquet / "photos.parquet"
    if not path.exists():
        raise ClipsqlError(f"{path} does not exist; run `clipsql extract` (or `clipsql run`) first")
    return pq.read_table(path, columns=["photo_id", "photo_image_url"])


def _now_ms(n: int) -> pa.Array:
    return pa.array([int(time.time() * 1000)] * n, pa.timestamp("ms", tz="UTC"))


class _Flusher:
    """Buffers vectors and failures and writes them as parts, by size or by time."""

    def __init__(self, store: EmbeddingStore, flush_rows: int, hashes: HashStore | None = None) -> None:
        self.store = store
        self.hash_store = hashes
        self.hash_rows: list[tuple[str, str, str, int]] = []  # photo_id, url, sha256, phash
        self.flush_rows = flush_rows
        self.ids: list[str] = []
        self.urls: list[str] = []
        self.hashes: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.failures: list[tuple[str, str, str, str]] = []
        self.last = time.monotonic()

    def add_vectors(self, ids: list[str], urls: list[str], hashes: list[str], vectors: np.ndarray) -> None:
        self.ids += ids
        self.urls += urls
        self.hashes += hashes
        self.vectors.append(vectors)

    def maybe_flush(self) -> None:
        if len(self.ids) + len(self.failures) >= self.flush_rows or time.monotonic() - self.last > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.hash_rows and self.hash_store is not None:
            pid, url, sha, value = zip(*self.hash_rows, strict=True)
            self.hash_store.write(pa.table({"photo_id": list(pid), "image_url": list(url), "sha256": list(sha),
                                            "phash": pa.array(value, pa.uint64()), "hashed_at": _now_ms(len(pid))}))
            self.hash_rows = []
        if self.failures:
            pid, url, reason, detail = zip(*self.failures, strict=True)
            self.store.write_failures(pa.table({
                "photo_id": list(pid), "model": [self.store.model] * len(pid), "url": list(url),
                "reason": list(reason), "detail": list(detail), "failed_at": _now_ms(len(pid)),
            }))
            self.failures = []
        if self.ids:
            matrix = np.concatenate(self.vectors).astype(np.float32)
            flat = pa.array(matrix.ravel(), pa.float32())
            table = pa.table({
                "photo_id": self.ids, "model": [self.store.model] * len(self.ids),
                "embedding": pa.ListArray.from_arrays(pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)), flat),
                "sha256": self.hashes, "image_url": self.urls, "embedded_at": _now_ms(len(self.ids)),
            })
            for offset in range(0, table.num_rows, self.flush_rows):
                self.store.write_embeddings(table.slice(offset, self.flush_rows))
                failpoint("embed.part_written")
            self.ids, self.urls, self.hashes, self.vectors = [], [], [], []
        self.last = time.monotonic()


def embed(
    settings: Settings,
    model: str | None = None,
    *,
    batch_size: int | None = None,
    device: str | None = None,
    retry_failed: bool = False,
    encoder: Encoder | None = None,
) -> StageReport:
    model = model or settings.model
    batch_size = batch_size or settings.batch_size
    report = StageReport("embed")
    paths = settings.paths()
    photos = read_photos(settings)
    store = EmbeddingStore(paths.embeddings, model)
    sources = store.embedded_sources()
    failures = store.failures().select(["photo_id", "url"]).rename_columns(["photo_id", "failed_url"])
    known = photos.join(sources, keys="photo_id", join_type="left outer").join(
        failures, keys="photo_id", join_type="left outer")  # joins reorder rows: every mask below is on `known`
    done = pc.fill_null(pc.equal(known["photo_image_url"], known["image_url"]), False)
    changed = pc.and_(pc.is_valid(known["image_url"]), pc.invert(done))  # embedded before, new URL now
    failed_before = pc.fill_null(pc.equal(known["failed_url"], known["photo_image_url"]), False)  # this very URL failed
    todo_mask = pc.invert(done) if retry_failed else pc.and_(pc.invert(done), pc.invert(failed_before))
    todo = known.filter(todo_mask)
    old_hashes = dict(zip(known.filter(changed)["photo_id"].to_pylist(), known.filter(changed)["sha256"].to_pylist(),
                          strict=True))
    report.rows_in = photos.num_rows
    already = pc.sum(done).as_py() or 0
    skipped_failed = 0 if retry_failed else (pc.sum(pc.and_(pc.invert(done), failed_before)).as_py() or 0)
    report.details = {"model": store.model, "already_embedded": already, "failed_earlier_not_retried": skipped_failed,
                      "image_url_changed": len(old_hashes)}

    fetched_network = cache_hits = 0
    reasons: Counter = Counter()
    if todo.num_rows:
        encoder = encoder or load_encoder(model, device or settings.device, data_dir=settings.data_dir)
        store.ensure_meta(encoder.dim, encoder.kind)
        report.details.update({"dim": encoder.dim, "device": encoder.device, "encoder": encoder.kind})
        fetcher = ImageFetcher(paths.images, timeout=settings.http_timeout, retries=settings.http_retries,
                               pool_size=settings.workers)
        ids = todo["photo_id"].to_pylist()
        urls = todo["photo_image_url"].to_pylist()
        flusher = _Flusher(store, settings.flush_rows, HashStore(paths.hashes))

        def prepare(index: int) -> Prepared:
            url = thumbnail_url(urls[index])
            try:
                fetched = fetcher.fetch(url)
            except ImageError as exc:
                return Prepared(index, error=exc)
            try:
                image = decode_image(fetched.data, encoder.input_size)
            except ImageError as exc:
                fetcher.evict(url)
                return Prepared(index, error=exc)
            return Prepared(index, encoder.prepare(image), fetched.sha256, from_cache=fetched.from_cache,
                            phash=phash64(image))

        batch: list[Prepared] = []
        relinked: list[Prepared] = []  # new URL, same bytes: keep the vector, record the URL

        def run_batch() -> None:
            vectors = encoder.encode_images(np.stack([p.pixels for p in batch]))
            flusher.add_vectors([ids[p.index] for p in batch], [urls[p.index] for p in batch],
                                [p.sha256 for p in batch], vectors)
            batch.clear()

        started = time.monotonic()
        window = max(settings.workers * 2, batch_size * 2)
        with ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="fetch") as pool, \
                tqdm(total=len(ids), unit="img", desc=f"embed {store.slug}", disable=None) as bar:
            in_flight: set[Future[Prepared]] = set()
            next_index = 0
            while next_index < len(ids) or in_flight:
                while next_index < len(ids) and len(in_flight) < window:
                    in_flight.add(pool.submit(prepare, next_index))
                    next_index += 1
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    prepared = future.result()
                    if prepared.error is None:
                        flusher.hash_rows.append((ids[prepared.index], urls[prepared.index], prepared.sha256,
                                                  prepared.phash))
                    if prepared.error is None and old_hashes.get(ids[prepared.index]) == prepared.sha256:
                        relinked.append(prepared)
                        bar.update(1)
                    elif prepared.error is None:
                        batch.append(prepared)
                        cache_hits += prepared.from_cache
                        fetched_network += not prepared.from_cache
                    else:
                        reasons[prepared.error.reason] += 1
                        flusher.failures.append((ids[prepared.index], urls[prepared.index], prepared.error.reason,
                                                 prepared.error.detail))
                        bar.update(1)
                    if len(batch) >= batch_size:
                        bar.update(len(batch))
                        run_batch()
                        failpoint("embed.batch_computed")
                        flusher.maybe_flush()
            if batch:
                bar.update(len(batch))
                run_batch()
            if relinked:
                _relink(store, flusher, [ids[p.index] for p in relinked], [urls[p.index] for p in relinked],
                        [p.sha256 for p in relinked])
            flusher.flush()
        elapsed = time.monotonic() - started
        embedded_now = todo.num_rows - sum(reasons.values()) - len(relinked)
        report.details.update({"same_image_new_url": len(relinked), "images_per_s": round(embedded_now / elapsed, 2) if elapsed else None,
                               "http_requests": fetcher.network_requests, "cache_hits": cache_hits,
                               "fetched": fetched_network})
        report.rows_out = embedded_now
        report.skipped += len(relinked)
    report.rejected = sum(reasons.values())
    report.rejects_by_reason.update(reasons)
    report.skipped += already + skipped_failed
    report.details["hashed_from_cache"] = backfill_hashes(settings, store)
    report.details["keywords_embedded"] = _embed_new_keywords(settings, store, encoder, model, device)
    _write_failure_list(settings, store)
    return report.finish()


def _embed_new_keywords(settings: Settings, store: EmbeddingStore, encoder: Encoder | None, model: str,
                        device: str | None) -> int:
    """Text vectors for keywords this model has not encoded yet, if it has a text tower."""
    missing = missing_keywords(settings, store)
    if not missing:
        return 0
    if encoder is None:
        if (store.meta() or {}).get("encoder") != "clip":
            return 0
        encoder = load_encoder(model, device or settings.device, data_dir=settings.data_dir)
    if not encoder.supports_text:
        return 0
    return embed_keywords(encoder, store, missing)


def backfill_hashes(settings: Settings, store: EmbeddingStore) -> int:
    """Hash the images of embedded photos that have no perceptual hash for their current bytes yet
    (embedded before hashes existed, or hashed parts lost), from the image cache: no network."""
    hashes = HashStore(settings.paths().hashes)
    sources = store.embedded_sources()
    known = hashes.read_all().select(["photo_id", "sha256"])
    known = known.append_column("hashed", pa.array(np.ones(known.num_rows, dtype=bool)))
    joined = sources.join(known, keys=["photo_id", "sha256"], join_type="left outer")
    missing = joined.filter(pc.is_null(joined["hashed"]))
    if missing.num_rows == 0:
        return 0
    fetcher = ImageFetcher(settings.paths().images, timeout=settings.http_timeout, retries=0)
    ids, urls, shas = (missing[c].to_pylist() for c in ("photo_id", "image_url", "sha256"))

    def hash_one(index: int) -> tuple[int, int | None]:
        url = thumbnail_url(urls[index])
        local = url.startswith("file://") or "://" not in url
        data = fetcher.fetch(url).data if local else fetcher.cached(url)
        if data is None or hashlib.sha256(data).hexdigest() != shas[index]:
            return index, None  # not cached any more, or the cache holds other bytes: hashed on the next fetch
        try:
            return index, phash64(decode_image(data, 64))
        except ImageError:
            return index, None

    rows = []
    with ThreadPoolExecutor(max_workers=max(1, min(settings.workers, 4)), thread_name_prefix="phash") as pool:
        for index, value in tqdm(pool.map(hash_one, range(len(ids))), total=len(ids), unit="img", desc="phash",
                                 disable=None, leave=False):
            if value is not None:
                rows.append((ids[index], urls[index], shas[index], value))
    if rows:
        pid, url, sha, value = zip(*rows, strict=True)
        hashes.write(pa.table({"photo_id": list(pid), "image_url": list(url), "sha256": list(sha),
                               "phash": pa.array(value, pa.uint64()), "hashed_at": _now_ms(len(pid))}))
    return len(rows)


def _relink(store: EmbeddingStore, flusher: _Flusher, ids: list[str], urls: list[str], hashes: list[str]) -> None:
    """A photo's URL changed but its bytes did not: store its existing vector under the new URL."""
    current = store.read_all()
    current = current.filter(pc.is_in(current["photo_id"], pa.array(ids)))
    by_id = dict(zip(current["photo_id"].to_pylist(), range(current.num_rows), strict=True))
    rows = [by_id[i] for i in ids]
    vectors = np.array(current["embedding"].take(pa.array(rows)).to_pylist(), dtype=np.float32)
    flusher.add_vectors(ids, urls, hashes, vectors)


def _write_failure_list(settings: Settings, store: EmbeddingStore) -> None:
    """All photos currently without a vector because of a failure, where a user looks for rejects."""
    failures = store.failures()
    path = settings.paths().rejects / f"embed-{store.slug}.csv"
    if failures.num_rows == 0:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(failures.select(["photo_id", "reason", "detail", "url", "failed_at"]), path)
