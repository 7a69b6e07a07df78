"""Stage 1, extract: dataset source -> one typed Parquet file per table.

Reads all five Unsplash Lite tables (split files concatenated in order), quarantines bad rows
to `<data-dir>/rejects/extract-<table>.csv`, applies `--limit` (the first N photos and only
their rows elsewhere), and writes `<data-dir>/parquet/<table>.parquet` atomically. A manifest
records the source version; re-running on the same version and limit does nothing.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .config import Settings, redact
from .failpoints import failpoint
from .fsutil import atomic_write_json, atomic_write_parquet, read_json
from .hfsource import extract_hf
from .report import StageReport
from .schemas import COLUMN_ALIASES, REQUIRED_COLUMNS, TABLE_SCHEMAS, TABLES
from .sources import TsvSource, is_hf_source, resolve_source, source_version
from .tsv import REJECT_SCHEMA, parse_tsv

MANIFEST = "_manifest.json"


def _dedupe_photos(photos: pa.Table, files: pa.Array, lines: pa.Array) -> tuple[pa.Table, pa.Table]:
    """Keep the first row of each photo_id; later copies are rejects, located by file and line."""
    indexed = photos.append_column("__row", pa.array(range(photos.num_rows), pa.int64()))
    firsts = indexed.group_by("photo_id", use_threads=False).aggregate([("__row", "min")])["__row_min"]
    keep = pc.is_in(indexed["__row"], firsts)
    duplicates = pc.invert(keep)
    n = pc.sum(duplicates).as_py() or 0
    rejects = pa.table({
        "file": pc.filter(files, duplicates), "line": pc.filter(lines, duplicates),
        "reason": pa.array(["duplicate photo_id"] * n), "raw": pc.filter(photos["photo_id"], duplicates),
    }, schema=REJECT_SCHEMA)
    return photos.filter(keep), rejects


def _resolve_relative_urls(photos: pa.Table, source: TsvSource) -> pa.Table:
    """Relative image paths (a directory dataset with local images) become file:// URLs."""
    if source.image_base is None or photos.num_rows == 0:
        return photos
    urls = photos["photo_image_url"]
    absolute = pc.match_substring_regex(urls, r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
    base = source.image_base.as_uri() + "/"
    joined = pc.binary_join_element_wise(base, urls, "")
    index = photos.schema.get_field_index("photo_image_url")
    return photos.set_column(index, "photo_image_url", pc.if_else(absolute, urls, joined))


def _write_rejects(settings: Settings, table: str, rejects: pa.Table) -> str | None:
    path = settings.paths().rejects / f"extract-{table}.csv"
    if rejects.num_rows == 0:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    pacsv.write_csv(rejects, tmp)
    tmp.replace(path)
    return str(path)


def extract(settings: Settings, source: str | None = None, limit: int | None = None) -> StageReport:
    source = source or settings.source
    if is_hf_source(source):
        return extract_hf(settings, source, limit)
    report = StageReport("extract")
    paths = settings.paths()
    resolved = resolve_source(source, paths, timeout=settings.http_timeout, retries=settings.http_retries)
    report.notes.extend(resolved.notes)
    for reason, count in resolved.convert_rejects.items():
        report.rejects_by_reason[f"images: {reason}"] += count

    version = source_version(resolved)

    manifest = read_json(paths.parquet / MANIFEST, {})
    outputs_exist = all((paths.parquet / f"{t}.parquet").exists() for t in TABLES)
    if manifest.get("version") == version and manifest.get("limit") == limit and outputs_exist:
        report.details = {"version": version, "source": redact(resolved.description), "unchanged": True,
                          "tables": manifest.get("tables", {})}
        report.rows_in = report.skipped = sum(t["in"] for t in manifest.get("tables", {}).values())
        report.notes.append(f"source unchanged (version {version}); Parquet files kept")
        return report.finish()

    parsed_tables: dict[str, pa.Table] = {}
    table_stats: dict[str, dict] = {}
    for table in TABLES:
        schema = TABLE_SCHEMAS[table]
        pieces, rejects, rows_in, extra, files, lines = [], [], 0, set(), [], []
        for table_file in resolved.files.get(table, []):
            parsed = parse_tsv(table_file.read(), schema, table_file.name, REQUIRED_COLUMNS[table], COLUMN_ALIASES.get(table))
            pieces.append(parsed.table)
            files.append(pa.array([table_file.name] * parsed.table.num_rows, pa.string()))
            lines.append(parsed.lines.cast(pa.int64()))
            rejects.append(parsed.rejects)
            rows_in += parsed.rows_in
            extra.update(parsed.extra_columns)
        combined = pa.concat_tables(pieces) if pieces else schema.empty_table()
        reject_table = pa.concat_tables(rejects) if rejects else REJECT_SCHEMA.empty_table()
        if table == "photos":
            combined, duplicates = _dedupe_photos(
                combined,
                pa.concat_arrays(files) if files else pa.array([], pa.string()),
                pa.concat_arrays(lines) if lines else pa.array([], pa.int64()),
            )
            reject_table = pa.concat_tables([reject_table, duplicates])
            combined = _resolve_relative_urls(combined, resolved)
        if extra:
            report.notes.append(f"{table}: extra column(s) ignored: {', '.join(sorted(extra))}")
        parsed_tables[table] = combined
        table_stats[table] = {"in": rows_in, "rejected": reject_table.num_rows,
                              "rejects_file": _write_rejects(settings, table, reject_table)}
        for reason in reject_table["reason"].to_pylist():
            report.rejects_by_reason[f"{table}: {reason.split(':')[0]}"] += 1

    photos = parsed_tables["photos"]
    if limit is not None and photos.num_rows > limit:
        parsed_tables["photos"] = photos = photos.slice(0, limit)
    kept_ids = photos["photo_id"]
    for table in TABLES:
        if table != "photos" and limit is not None:
            parsed_tables[table] = parsed_tables[table].filter(pc.is_in(parsed_tables[table]["photo_id"], kept_ids))
        stats = table_stats[table]
        stats["out"] = parsed_tables[table].num_rows
        stats["skipped"] = stats["in"] - stats["rejected"] - stats["out"]  # left out by --limit
        atomic_write_parquet(paths.parquet / f"{table}.parquet", parsed_tables[table])
        failpoint("extract.table_written")

    report.rows_in = sum(s["in"] for s in table_stats.values())
    report.rows_out = sum(s["out"] for s in table_stats.values())
    report.rejected = sum(s["rejected"] for s in table_stats.values()) + sum(resolved.convert_rejects.values())
    report.skipped = sum(s["skipped"] for s in table_stats.values())
    report.details = {"version": version, "source": redact(resolved.description), "limit": limit, "tables": table_stats}
    if resolved.download is not None:
        report.details["download"] = {"bytes_fetched": resolved.download.bytes_fetched, "size": resolved.download.size,
                                      "resumed": resolved.download.resumed, "not_modified": resolved.download.not_modified}
    atomic_write_json(paths.parquet / MANIFEST, {
        "version": version, "source": redact(resolved.description), "limit": limit, "tables": table_stats,
        "extracted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return report.finish()
