"""`clipsql eval`: how well each model retrieves images of the same class, measured.

Leave-one-out over a labelled set: every photo is a query once, the others are the database.
A result is relevant when it shares a label with the query (its class collection, or with
`--labels keywords` any keyword). Per query: precision@k (relevant among the k nearest),
recall@k (of all relevant photos, how many are in the k nearest), average precision over the
whole ranking (mAP is its mean) and over the first k (mAP@k, normalised by min(k, relevant));
chance is the precision a random ranking gets on average, (relevant) / (photos - 1).

The exact evaluation runs in numpy from the stored vectors: cosine similarities by matrix
product, one block of queries at a time, ranked with a stable sort. Distances that tie (a
perceptual hash has only 65 possible ones) are broken by a hash of the photo id, which knows
nothing about labels, so ties neither help nor hurt a model. With `--index` the same queries
also go through the database's search (HNSW or IVF plan), and `overlap@k` says how many of the
exact k nearest the index found: the cost of approximation.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from .config import Settings
from .errors import NotFoundError, UsageError
from .fsutil import atomic_write_json
from .store import canonical_model_name, stored_models
from .train.data import in_holdout, read_labels, read_photos, stored_vectors
from .train.plots import grouped_bars

OVERALL = "(all)"


@dataclass
class LabelledSet:
    """Photos (in tie-break order) with their labels, as ids into `names` or a photos x labels matrix."""

    photo_ids: np.ndarray
    names: list[str]
    single: np.ndarray | None  # label id per photo, when every photo has one label
    matrix: np.ndarray | None  # photos x labels, bool, otherwise

    def __len__(self) -> int:
        return len(self.photo_ids)

    def relevant(self, rows: np.ndarray) -> np.ndarray:
        """rows x photos: does each photo share a label with the photo of each row."""
        if self.single is not None:
            return self.single[rows][:, None] == self.single[None, :]
        assert self.matrix is not None
        block = self.matrix[rows].astype(np.float32)
        return (block @ self.matrix.T.astype(np.float32)) > 0

    def class_of(self, rows: np.ndarray) -> list[str] | None:
        return [self.names[i] for i in self.single[rows]] if self.single is not None else None


def tiebreak_order(photo_ids: list[str]) -> np.ndarray:
    """Photos ordered by a hash of their id: equal distances are ranked in this order."""
    keys = [hashlib.sha1(p.encode()).hexdigest() for p in photo_ids]
    return np.array(sorted(range(len(photo_ids)), key=keys.__getitem__), dtype=np.int64)


def labelled_set(photo_ids: list[str], labels: dict[str, list[str]]) -> LabelledSet:
    ids = [p for p in photo_ids if labels.get(p)]
    ids = [ids[i] for i in tiebreak_order(ids)]
    names = sorted({label for p in ids for label in labels[p]})
    index = {name: i for i, name in enumerate(names)}
    if all(len(labels[p]) == 1 for p in ids):
        return LabelledSet(np.array(ids, dtype=object), names,
                           np.array([index[labels[p][0]] for p in ids], dtype=np.int64), None)
    matrix = np.zeros((len(ids), len(names)), dtype=bool)
    for row, p in enumerate(ids):
        matrix[row, [index[label] for label in labels[p]]] = True
    return LabelledSet(np.array(ids, dtype=object), names, None, matrix)


@dataclass
class QueryScores:
    """Per-query metrics, for the queries that have at least one relevant photo."""

    rows: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    ap_at_k: np.ndarray
    ap: np.ndarray | None
    chance: np.ndarray
    topk: np.ndarray  # rows x k: the photos found, as row numbers of the labelled set
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def _scores_from_ranking(relevance: np.ndarray, n_relevant: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """relevance: queries x ranked results (bool). Returns precision@k, recall@k, AP@k, AP (full)."""
    hits = np.cumsum(relevance, axis=1)
    ranks = np.arange(1, relevance.shape[1] + 1)
    precision_at = hits / ranks
    top = relevance[:, :k]
    precision = top.sum(axis=1) / k
    recall = top.sum(axis=1) / n_relevant
    ap_at_k = (precision_at[:, :k] * top).sum(axis=1) / np.minimum(k, n_relevant)
    ap = (precision_at * relevance).sum(axis=1) / n_relevant
    return precision, recall, ap_at_k, ap


def exact_scores(vectors: np.ndarray, data: LabelledSet, k: int, queries: np.ndarray,
                 batch: int | None = None) -> QueryScores:
    """Leave-one-out metrics of `queries` (row numbers) against all rows, by brute force in numpy."""
    n = len(data)
    if n < 2:
        raise UsageError(f"evaluation needs at least 2 labelled photos, found {n}")
    if k > n - 1:
        raise UsageError(f"-k {k} is more than the {n - 1} other photos")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    batch = batch or max(1, min(1024, 4_000_000 // n))
    parts: list[tuple[np.ndarray, ...]] = []
    for start in tqdm(range(0, len(queries), batch), unit="batch", desc="exact ranking", disable=None, leave=False):
        rows = queries[start:start + batch]
        similarity = vectors[rows] @ vectors.T
        similarity[np.arange(len(rows)), rows] = -np.inf  # the query itself goes last, then is dropped
        order = np.argsort(-similarity, axis=1, kind="stable")[:, : n - 1]
        relevance = np.take_along_axis(data.relevant(rows), order, axis=1)
        n_relevant = relevance.sum(axis=1)
        keep = n_relevant > 0
        precision, recall, ap_at_k, ap = _scores_from_ranking(relevance[keep], n_relevant[keep], k)
        parts.append((rows[keep], precision, recall, ap_at_k, ap, n_relevant[keep] / (n - 1), order[keep, :k]))
    columns = [np.concatenate([p[i] for p in parts]) for i in range(7)]
    return QueryScores(columns[0], columns[1], columns[2], columns[3], columns[4], columns[5], columns[6])


def index_scores(db, model_name: str, vectors: np.ndarray, data: LabelledSet, k: int, queries: np.ndarray,
                 exact: QueryScores, method: str = "auto") -> QueryScores:
    """The same queries through the database's search: precision, recall and AP over its top k,
    and how many of the exact top k it found."""
    from .search import SearchOptions, loaded_models, nearest
    from .selection import Part, Selection

    by_name = {m.name: m for m in loaded_models(db)}
    model = by_name.get(canonical_model_name(model_name))
    if model is None:
        raise NotFoundError(f"--index: model {model_name!r} is not loaded in the database; run `clipsql load` "
                            f"(loaded: {', '.join(by_name) or 'none'})")
    row_of = {p: i for i, p in enumerate(data.photo_ids)}
    within = Selection([Part("ids", list(data.photo_ids), "the evaluated photos")]) \
        if db.count("photos") != len(data) else Selection()
    exact_top = {int(r): set(t.tolist()) for r, t in zip(exact.rows, exact.topk, strict=True)}
    n = len(data)
    found_rows, latencies, plans = [], [], set()
    for row in tqdm(exact.rows, unit="query", desc=f"index {model.name}", disable=None, leave=False):
        options = SearchOptions(k=k, exclude=str(data.photo_ids[row]), method=method, within=within)
        started = time.perf_counter()
        result = nearest(db, model, vectors[row], options)
        latencies.append(time.perf_counter() - started)
        plans.add(result.plan.split(":")[0])
        ranked = [row_of.get(r["photo_id"], -1) for r in result.rows][:k]
        found_rows.append(ranked + [-1] * (k - len(ranked)))
    found = np.array(found_rows, dtype=np.int64).reshape(len(exact.rows), k)
    relevance = np.zeros(found.shape, dtype=bool)
    for i, row in enumerate(exact.rows):
        valid = found[i] >= 0
        relevance[i, valid] = data.relevant(np.array([row]))[0, found[i, valid]]
    n_relevant = np.rint(exact.chance * (n - 1)).astype(np.int64)
    precision, recall, ap_at_k, _ = _scores_from_ranking(relevance, n_relevant, k)
    overlap = np.array([len(exact_top[int(r)] & set(found[i][found[i] >= 0].tolist())) / k
                        for i, r in enumerate(exact.rows)])
    return QueryScores(exact.rows, precision, recall, ap_at_k, None, exact.chance, found,
                       {"overlap": overlap, "latency_ms": np.array(latencies) * 1000,
                        "plan": np.array(sorted(plans), dtype=object)})


def _summary(model: str, method: str, label: str, scores: QueryScores, mask: np.ndarray, k: int) -> dict[str, Any]:
    def mean(values: np.ndarray | None) -> float | None:
        return round(float(values[mask].mean()), 4) if values is not None and mask.any() else None

    row = {"model": model, "method": method, "class": label, "queries": int(mask.sum()),
           f"precision@{k}": mean(scores.precision), f"recall@{k}": mean(scores.recall),
           f"mAP@{k}": mean(scores.ap_at_k), "mAP": mean(scores.ap), "chance": mean(scores.chance)}
    if "overlap" in scores.extra:
        row[f"overlap@{k}"] = mean(scores.extra["overlap"])
        row["ms/query"] = round(float(np.median(scores.extra["latency_ms"][mask])), 2) if mask.any() else None
    return row


@dataclass
class Evaluation:
    k: int
    labels: str
    photos: int
    classes: int
    rows: list[dict[str, Any]]
    chart: Path | None = None
    report: Path | None = None

    def overall(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["class"] == OVERALL]


def evaluate(settings: Settings, models: list[str] | None = None, *, k: int = 5, labels: str = "collections",
             holdout: float = 0.0, queries: int | None = None, index: bool = False, method: str = "auto",
             chart: Path | None = None, seed: int = 0, db=None) -> Evaluation:
    """Evaluate each model's stored vectors on the labelled photos of the data directory."""
    paths = settings.paths()
    available = stored_models(paths.embeddings)
    models = [canonical_model_name(m) for m in (models or available)]
    if not models:
        raise NotFoundError(f"no model has vectors in {paths.embeddings}; run `clipsql embed` first")
    by_photo = read_labels(settings, labels)
    photo_ids = read_photos(settings)["photo_id"].to_pylist()
    if holdout:
        photo_ids = [p for p, held in zip(photo_ids, in_holdout(photo_ids, holdout), strict=True) if held]
    # Only photos every model has a vector for, so all models answer the same queries over the same set.
    vectors_of: dict[str, Any] = {}
    common = set(p for p in photo_ids if by_photo.get(p))
    for model in models:
        if model not in available:
            raise NotFoundError(f"model {model!r} has no stored vectors in {paths.embeddings}; stored: "
                                f"{', '.join(available) or 'none'}")
        stored = stored_vectors(paths.embeddings, model, pa.array(photo_ids, pa.string()))
        vectors_of[model] = stored
        common &= set(stored.photo_ids)
    data = labelled_set([p for p in photo_ids if p in common], by_photo)
    if len(data) < 2:
        raise UsageError(f"only {len(data)} photo(s) have labels ({labels}) and vectors of every model; evaluation "
                         "needs a labelled set (e.g. --source folder:PATH with class folders)")
    query_rows = np.arange(len(data))
    if queries is not None and queries < len(data):
        query_rows = np.sort(np.random.default_rng(seed).choice(len(data), size=queries, replace=False))
    rows: list[dict[str, Any]] = []
    per_class: dict[str, dict[str, float]] = {}
    chance_of: dict[str, float] = {}
    for model in models:
        stored = vectors_of[model]
        position = {p: i for i, p in enumerate(stored.photo_ids)}
        vectors = stored.vectors[[position[p] for p in data.photo_ids]]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        results = [("exact", exact_scores(vectors, data, k, query_rows))]
        if index:
            if db is None:
                raise UsageError("--index needs the database")
            results.append(("index", index_scores(db, model, vectors, data, k, query_rows, results[0][1], method)))
        for method_name, scores in results:
            everything = np.ones(len(scores.rows), dtype=bool)
            summary = _summary(model, method_name, OVERALL, scores, everything, k)
            if "plan" in scores.extra:
                summary["method"] = "index (" + ", ".join(scores.extra["plan"]) + ")"
            rows.append(summary)
            classes = data.class_of(scores.rows)
            if classes is not None:
                class_array = np.array(classes, dtype=object)
                for label in sorted(set(classes)):
                    row = _summary(model, summary["method"], label, scores, class_array == label, k)
                    rows.append(row)
                    if method_name == "exact":
                        per_class.setdefault(model, {})[label] = row[f"precision@{k}"]
                        chance_of[label] = row["chance"]
            if method_name == "exact":
                per_class.setdefault(model, {})[OVERALL] = summary[f"precision@{k}"]
                chance_of[OVERALL] = summary["chance"]
    evaluation = Evaluation(k, labels, len(data), len(data.names), rows)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    chart = chart or paths.reports / f"eval-{stamp}.png"
    groups = [g for g in sorted(chance_of) if g != OVERALL] + [OVERALL]
    if len(groups) > 41:  # keyword labels: one bar group each would be unreadable
        groups = [OVERALL]
    evaluation.chart = grouped_bars(
        chart, groups, {m: [per_class[m].get(g) or 0.0 for g in groups] for m in models},
        [chance_of[g] or 0.0 for g in groups],
        f"precision@{k}, leave-one-out over {len(data)} photos ({labels})", f"precision@{k}")
    evaluation.report = paths.reports / f"eval-{stamp}.json"
    payload = {"k": k, "labels": labels, "photos": len(data), "classes": len(data.names), "holdout": holdout,
               "queries": int(len(query_rows)), "models": models, "rows": rows, "chart": str(evaluation.chart)}
    atomic_write_json(evaluation.report, payload)
    atomic_write_json(paths.reports / "eval-latest.json", payload)
    return evaluation

