"""`clipsql demo`: the whole tutorial on the bundled offline sample, in one command.

Runs extract + embed + load on `pipeline/sample` (300 public-domain openclipart images in the
Unsplash Lite layout; conversions are synthetic, see its README), then shows a similar-photo
search for the most downloaded photo and the tutorial's two analytics queries for it. It uses
CLIP when its weights are on this machine, otherwise the offline EfficientNet-Lite0 weights.
"""

from __future__ import annotations

import logging
from typing import Any

from .config import DEFAULT_MODEL, Settings
from .db import open_database
from .encoders import EFFICIENTNET, clip_weights_available
from .output import emit
from .queries import run_query
from .runner import run_pipeline
from .search import SearchOptions, search

log = logging.getLogger("clipsql")


def choose_model(requested: str | None) -> tuple[str, str]:
    if requested:
        return requested, "as requested"
    if clip_weights_available(DEFAULT_MODEL):
        return DEFAULT_MODEL, "CLIP weights found in the HuggingFace cache"
    return EFFICIENTNET, f"{DEFAULT_MODEL} weights are not on this machine (no Hub access); using the offline ImageNet weights"


def run_demo(settings: Settings, *, model: str | None, k: int, fmt: str, quiet: bool) -> None:
    chosen, why = choose_model(model)
    log.info("demo: model %s (%s)", chosen, why)
    run_pipeline(settings, source="sample", models=[chosen], command="demo")
    with open_database(settings) as db:
        target_rows = db.query_rows(
            "SELECT c.photo_id, any(p.photo_description), count() AS downloads FROM conversions AS c "
            "INNER JOIN photos AS p ON p.photo_id = c.photo_id "
            "WHERE c.photo_id IN (SELECT photo_id FROM photo_embeddings WHERE model = {m:String}) "
            "GROUP BY c.photo_id ORDER BY downloads DESC, c.photo_id LIMIT 1",
            {"m": search_model_name(chosen)},
        )
        target, description, downloads = target_rows[0]
        sections: list[tuple[str, str, Any]] = [
            ("search", f"Photos most similar to {target} ({description!r}, {downloads} downloads), model {chosen}:",
             search(db, settings, photo_id=target, model=chosen, options=SearchOptions(k=k)).rows),
            ("similar_downloads", f"similar_downloads: downloads of its {k} nearest neighbours:",
             run_query(db, settings, "similar_downloads", {"photo_id": target, "k": k, "model": search_model_name(chosen)})),
            ("popular_candidate_keywords", "popular_candidate_keywords: top keywords of the most downloaded neighbour:",
             run_query(db, settings, "popular_candidate_keywords",
                       {"photo_id": target, "k": k, "model": search_model_name(chosen)})),
        ]
    if fmt == "table":
        for _, title, rows in sections:
            print()
            emit(rows, fmt, title=title)
        log.info("\nNext: clipsql search --photo-id=ID, clipsql query --list, clipsql status "
                 "(conversions in the sample are synthetic; see pipeline/sample/README.md)")
        return
    combined = []
    for section, _, rows in sections:
        items = rows.to_pylist() if hasattr(rows, "to_pylist") else rows
        combined.extend({"section": section, **row} for row in items)
    emit(combined, fmt)


def search_model_name(model: str) -> str:
    from .store import canonical_model_name

    return canonical_model_name(model)
