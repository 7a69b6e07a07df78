"""`--source hf:OWNER/NAME`: the published Parquet files with precomputed CLIP vectors.

MyScale publishes the tutorial's output as a HuggingFace dataset (`myscale/unsplash-examples`:
`photos-all.parquet` with id, photo_id, photo_image_url, photo_embed; `conversions-all.parquet`
with id, photo_id, keyword). Loading it through `datasets` fills the photos and conversions
tables and stores the vectors as embeddings of `openai/clip-vit-base-patch32`, so the embed
stage has nothing left to do. `hf:/a/local/dir` reads the same files from a directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .config import DEFAULT_MODEL, Settings
from .errors import SourceError
from .fsutil import atomic_write_json, atomic_write_parquet, read_json, table_digest
from .report import StageReport
from .schemas import TABLE_SCHEMAS, TABLES
from .store import EmbeddingStore

PHOTOS_FILE = "photos-all.parquet"
CONVERSIONS_FILE = "conversions-all.parquet"
CLIP_DIM = 512


def _unit_vectors(column: pa.ChunkedArray) -> pa.Array:
    """L2-normalised copies (the published vectors should already be), so cosine and L2 search agree.
    Rows of the wrong length are left as they are: load quarantines them."""
    array = column.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False)
    if array.null_count or len(array) == 0 or not (lengths == lengths[0]).all():
        return array
    matrix = pc.list_flatten(array).to_numpy(zero_copy_only=False).reshape(len(array), -1).astype(np.float32)
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel(), pa.float32()))


def _load(reference: str) -> dict[str, pa.Table]:
    try:
        from datasets import load_dataset
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise SourceError(f"hf:{reference} needs the datasets package ({exc})") from None
    local = Path(reference).expanduser()
    path = str(local) if local.is_dir() else reference
    tables = {}
    for name, file in (("photos", PHOTOS_FILE), ("conversions", CONVERSIONS_FILE)):
        try:  # one load per file: as two splits of one dataset, datasets would force one schema on both
            tables[name] = load_dataset(path, data_files=file, split="train").data.table
        except Exception as exc:  # datasets raises many types for "not there" / "no network"
            raise SourceError(
                f"hf:{reference}: cannot load {file} through datasets ({type(exc).__name__}: "
                f"{(str(exc).splitlines() or [''])[0][:300]})"
            ) from None
    return tables


def _valid_vectors(vectors: pa.ChunkedArray, dim: int) -> tuple[np.ndarray, list[str]]:
    """Which rows hold a vector of the right length with no NaN/inf; the reason for the others."""
    vectors = vectors.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(vectors), 0).to_numpy(zero_copy_only=False)
    reasons = np.where(lengths != dim, f"vector has the wrong dimension (expected {dim})", "").astype(object)
    values = pc.list_flatten(vectors).cast(pa.float64()).to_numpy(zero_copy_only=False)
    bad_value_rows = pc.list_parent_indices(vectors).to_numpy(zero_copy_only=False)[~np.isfinite(values)]
    reasons[np.unique(bad_value_rows)] = "vector contains NaN or infinity"
    ok = reasons == ""
    return ok, list(reasons)


def extract_hf(settings: Settings, source: str, limit: int | None) -> StageReport:
    report = StageReport("extract")
    reference = source[3:]
    paths = settings.paths()
    loaded = _load(reference)
    raw_photos, raw_conversions = loaded["photos"], loaded["conversions"]
    for needed, table in (({"photo_id", "photo_image_url", "photo_embed"}, raw_photos),
                          ({"photo_id", "keyword"}, raw_conversions)):
        missing = needed - set(table.column_names)
        if missing:
            raise SourceError(f"hf:{reference}: missing column(s) {', '.join(sorted(missing))}")
    rows_in = raw_photos.num_rows + raw_conversions.num_rows
    if limit is not None:
        raw_photos = raw_photos.slice(0, limit)

    ok, reasons = _valid_vectors(raw_photos["photo_embed"], CLIP_DIM)
    rejected = raw_photos.filter(pa.array(~ok))
    rejected_reasons = [r for r in reasons if r]
    raw_photos = raw_photos.filter(pa.array(ok))
    for reason in rejected_reasons:
        report.rejects_by_reason[f"photos: {reason}"] += 1
    if rejected.num_rows:
        settings.paths().rejects.mkdir(parents=True, exist_ok=True)
        pacsv.write_csv(pa.table({"photo_id": rejected["photo_id"].cast(pa.string()),
                                  "reason": pa.array(rejected_reasons)}), paths.rejects / "extract-hf-photos.csv")

    n = raw_photos.num_rows
    photos_schema = TABLE_SCHEMAS["photos"]
    photos = pa.table({
        name: (raw_photos[name].cast(pa.string()) if name in ("photo_id", "photo_image_url")
               else pa.nulls(n, field.type) if not pa.types.is_string(field.type) else pa.array([""] * n))
        for name, field in zip(photos_schema.names, photos_schema, strict=True)
    }, schema=photos_schema)
    conversions = raw_conversions.filter(pc.is_in(raw_conversions["photo_id"], photos["photo_id"]))
    m = conversions.num_rows
    conversions = pa.table({
        "converted_at": pa.nulls(m, pa.timestamp("us")),
        "conversion_type": pa.array(["download"] * m),
        "keyword": pc.fill_null(conversions["keyword"].cast(pa.string()), ""),
        "photo_id": conversions["photo_id"].cast(pa.string()),
        "anonymous_user_id": pa.array([""] * m),
        "conversion_country": pa.array([""] * m),
    }, schema=TABLE_SCHEMAS["conversions"])

    tables = {"photos": photos, "conversions": conversions}
    previous = (read_json(paths.parquet / "_manifest.json", {}) or {}).get("digests", {})
    digests = {}
    for table in TABLES:
        data = tables.get(table, TABLE_SCHEMAS[table].empty_table())
        digests[table] = table_digest(data)
        path = paths.parquet / f"{table}.parquet"
        if previous.get(table) != digests[table] or not path.exists():  # unchanged files keep their
            atomic_write_parquet(path, data)  # fingerprint, so load does not rebuild the same tables

    store = EmbeddingStore(paths.embeddings, DEFAULT_MODEL)
    store.ensure_meta(CLIP_DIM, "precomputed")
    new = pc.invert(pc.is_in(photos["photo_id"], store.embedded_ids()))
    vectors = raw_photos.filter(new)
    if vectors.num_rows:
        now = pa.scalar(int(time.time() * 1000), pa.timestamp("ms", tz="UTC"))
        store.write_embeddings(pa.table({
            "photo_id": vectors["photo_id"].cast(pa.string()),
            "model": pa.array([store.model] * vectors.num_rows),
            "embedding": _unit_vectors(vectors["photo_embed"].cast(pa.list_(pa.float32()))),
            "sha256": pa.array([""] * vectors.num_rows),
            "image_url": vectors["photo_image_url"].cast(pa.string()),
            "embedded_at": pa.array([now.value] * vectors.num_rows, pa.timestamp("ms", tz="UTC")),
        }))
    report.rows_in = rows_in
    report.rows_out = photos.num_rows + conversions.num_rows
    report.rejected = rejected.num_rows
    report.skipped = rows_in - report.rows_out - report.rejected
    report.details = {"source": source, "version": f"hf:{reference}", "limit": limit,
                      "tables": {"photos": photos.num_rows, "conversions": conversions.num_rows},
                      "vectors_added": vectors.num_rows, "model": store.model}
    report.notes.append(f"{vectors.num_rows} precomputed vectors stored as model {store.model}")
    atomic_write_json(paths.parquet / "_manifest.json", {"version": f"hf:{reference}", "source": source, "limit": limit,
                                                          "digests": digests,
                                                          "extracted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return report.finish()
