"""Near-duplicate groups (system 3) from three tiers of evidence, strongest first.

- `exact`: the same sha256, i.e. the same file (`queries/exact_duplicates.sql`);
- `phash`: 64-bit perceptual hashes within a Hamming distance, in SQL
  (`queries/near_duplicates_phash.sql`): re-encodes, resizes, small crops;
- `embedding`: image vectors within a cosine distance (a range self-join): the same scene shot
  twice, heavier edits. Its threshold depends on the model; see the README.

Pairs from all tiers are merged into groups (connected components). Each member is reported
with the strongest tier that ties it to another member, that member, and the distances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .db import Database
from .errors import UsageError
from .join import JoinSpec, similarity_join
from .queries import get_query
from .search import LoadedModel
from .selection import Selection
from .sqlfile import bind_parameters

TIERS = ("exact", "phash", "embedding")
TIER_STRENGTH = {tier: index for index, tier in enumerate(TIERS)}


@dataclass
class DuplicateOptions:
    tiers: tuple[str, ...] = TIERS
    max_hamming: int = 10
    max_distance: float = 0.08
    within: Selection = field(default_factory=Selection)

    def check(self) -> None:
        unknown = [t for t in self.tiers if t not in TIERS]
        if unknown or not self.tiers:
            raise UsageError(f"--tier must be among {', '.join(TIERS)}, got {', '.join(unknown) or 'none'}")
        if not 0 <= self.max_hamming <= 64:
            raise UsageError(f"--max-hamming must be between 0 and 64 bits, got {self.max_hamming}")
        if not 0 <= self.max_distance <= 2:
            raise UsageError(f"--max-distance must be between 0 and 2, got {self.max_distance}")


@dataclass
class Pair:
    a: str
    b: str
    tier: str
    hamming: int | None = None
    distance: float | None = None


def _query_pairs(db: Database, name: str, params: dict[str, Any], tier: str) -> list[Pair]:
    query = get_query(name)
    rows = db.query_rows(query.text.rstrip().rstrip(";"), bind_parameters(query, params))
    return [Pair(a, b, tier, hamming=int(h)) for a, b, h in rows]


def _embedding_pairs(db: Database, model: LoadedModel, options: DuplicateOptions) -> list[Pair]:
    spec = JoinSpec(a=options.within, b=options.within, k=None, radius=options.max_distance, batch_size=1024)
    pairs = []
    for batch in similarity_join(db, model, spec):
        for a, b, distance in zip(batch.column("a_photo_id").to_pylist(), batch.column("b_photo_id").to_pylist(),
                                  batch.column("distance").to_pylist(), strict=True):
            if a < b:
                pairs.append(Pair(a, b, "embedding", distance=float(distance)))
    return pairs


def _selected_ids(db: Database, within: Selection) -> set[str] | None:
    if within.is_all:
        return None
    condition, params = within.condition()
    return {row[0] for row in db.query_rows(f"SELECT photo_id FROM photos WHERE {condition}", params)}


def collect_pairs(db: Database, model: LoadedModel | None, options: DuplicateOptions) -> list[Pair]:
    options.check()
    pairs: list[Pair] = []
    if {"exact", "phash"} & set(options.tiers) and not db.table_exists("photo_hashes"):
        raise UsageError("no perceptual hashes are loaded; run `clipsql embed` and `clipsql load` (embedding computes "
                         "them), or use --tier embedding")
    if "exact" in options.tiers:
        pairs += _query_pairs(db, "exact_duplicates", {}, "exact")
    if "phash" in options.tiers:
        pairs += _query_pairs(db, "near_duplicates_phash", {"max_hamming": str(options.max_hamming)}, "phash")
    selected = _selected_ids(db, options.within)
    if selected is not None:
        pairs = [p for p in pairs if p.a in selected and p.b in selected]
    if "embedding" in options.tiers:
        if model is None:
            raise UsageError("the embedding tier needs a loaded model; run `clipsql load` or use --tier exact,phash")
        pairs += _embedding_pairs(db, model, options)
    return pairs


def group_pairs(pairs: list[Pair]) -> list[dict[str, Any]]:
    """Connected components of the pair graph, each member with its strongest link."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    best: dict[str, Pair] = {}
    merged: dict[tuple[str, str], Pair] = {}
    for pair in pairs:  # one record per photo pair, carrying every tier's measurements
        key = (pair.a, pair.b)
        known = merged.get(key)
        if known is None:
            merged[key] = Pair(pair.a, pair.b, pair.tier, pair.hamming, pair.distance)
            continue
        if TIER_STRENGTH[pair.tier] < TIER_STRENGTH[known.tier]:
            known.tier = pair.tier
        known.hamming = pair.hamming if pair.hamming is not None else known.hamming
        known.distance = pair.distance if pair.distance is not None else known.distance
    for pair in merged.values():
        parent[find(pair.a)] = find(pair.b)
        for member in (pair.a, pair.b):
            current = best.get(member)
            if current is None or (TIER_STRENGTH[pair.tier], pair.hamming or 0, pair.distance or 0.0) < (
                    TIER_STRENGTH[current.tier], current.hamming or 0, current.distance or 0.0):
                best[member] = pair
    groups: dict[str, list[str]] = {}
    for member in best:
        groups.setdefault(find(member), []).append(member)
    ordered = sorted((sorted(members) for members in groups.values()), key=lambda m: (-len(m), m[0]))
    rows = []
    for number, members in enumerate(ordered, 1):
        for member in members:
            link = best[member]
            rows.append({"group": number, "size": len(members), "photo_id": member, "tier": link.tier,
                         "matches": link.b if link.a == member else link.a, "hamming": link.hamming,
                         "distance": None if link.distance is None else round(float(np.float32(link.distance)), 6)})
    return rows
