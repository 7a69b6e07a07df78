"""`clipsql gc`: remove what no current table needs.

- `_stage_*` tables left by an interrupted load;
- embedding and failure parts, merged into one file per model (newest vector per photo);
- cached images whose URL is no longer any current photo's thumbnail (superseded or removed);
- stage reports beyond the newest `keep_reports` per stage.

It never touches the live tables, the current Parquet files, or vectors of current photos.
`clipsql refresh` runs it after a successful refresh.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq

from .config import Settings
from .db import Database
from .images import thumbnail_url
from .load import STAGE_PREFIX
from .report import StageReport
from .store import EmbeddingStore, HashStore, stored_models


def _current_cache_keys(settings: Settings) -> set[str] | None:
    photos_path = settings.paths().parquet / "photos.parquet"
    if not photos_path.exists():
        return None
    urls = pq.read_table(photos_path, columns=["photo_image_url"])["photo_image_url"].to_pylist()
    return {hashlib.sha1(thumbnail_url(url).encode("utf-8")).hexdigest() for url in urls}


def collect_garbage(db: Database | None, settings: Settings, keep_reports: int = 30) -> StageReport:
    report = StageReport("gc")
    paths = settings.paths()
    dropped = []
    if db is not None:
        for table in db.tables(STAGE_PREFIX):
            db.command("DROP TABLE IF EXISTS {t:Identifier} SYNC", {"t": table})
            dropped.append(table)
    merged = 0
    for model in stored_models(paths.embeddings):
        merged += EmbeddingStore(paths.embeddings, model).compact()
    merged += HashStore(paths.hashes).compact()
    freed, removed_images = 0, 0
    keep = _current_cache_keys(settings)
    if keep is not None and paths.images.is_dir():
        for path in paths.images.glob("*/*"):
            if path.is_file() and path.name not in keep and not path.name.startswith("."):
                freed += path.stat().st_size
                path.unlink()
                removed_images += 1
    old_reports = 0
    if paths.reports.is_dir():
        by_stage: dict[str, list[Path]] = {}
        for path in paths.reports.glob("*-*.json"):
            if not path.name.endswith("-latest.json"):
                by_stage.setdefault(path.name.split("-", 1)[0], []).append(path)
        for reports in by_stage.values():
            for path in sorted(reports)[:-keep_reports]:
                path.unlink()
                old_reports += 1
    report.details = {"stage_tables_dropped": dropped, "embedding_files_merged_away": merged,
                      "cached_images_removed": removed_images, "bytes_freed": freed, "old_reports_removed": old_reports}
    report.notes.append(
        f"dropped {len(dropped)} staging tables, merged away {merged} part files, removed {removed_images} "
        f"cached images ({freed / 1e6:.1f} MB) and {old_reports} old reports"
    )
    return report.finish()
