"""`clipsql eval`: leave-one-out precision@k, recall@k, mAP@k, mAP and chance, checked against a
brute-force computation in plain Python (sort every other photo, count), on random vectors and on
a labelled set of coloured shapes run through the real CLI, chDB included for `--index`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluate import OVERALL, exact_scores, labelled_set
from tests.fixtures.labelled import write_class_folders
from tests.helpers import run_cli


def brute_force(ids: list[str], vectors: np.ndarray, labels: dict[str, set[str]], k: int) -> dict[str, dict]:
    """Per query: the metrics by their definitions, one photo at a time, in float64."""
    v = vectors.astype(np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    out = {}
    for q, qid in enumerate(ids):
        others = [j for j in range(len(ids)) if j != q]
        ranked = sorted(others, key=lambda j: (-float(v[q] @ v[j]), hashlib.sha1(ids[j].encode()).hexdigest()))
        relevant = [bool(labels[ids[j]] & labels[qid]) for j in ranked]
        total = sum(relevant)
        if total == 0:
            continue
        hits_at = [sum(relevant[: i + 1]) for i in range(len(relevant))]
        ap = sum(hits_at[i] / (i + 1) for i in range(len(relevant)) if relevant[i]) / total
        ap_k = sum(hits_at[i] / (i + 1) for i in range(k) if relevant[i]) / min(k, total)
        out[qid] = {"precision": sum(relevant[:k]) / k, "recall": sum(relevant[:k]) / total, "ap": ap,
                    "ap_k": ap_k, "chance": total / (len(ids) - 1), "top": [ids[j] for j in ranked[:k]]}
    return out


def _compare(ids, vectors, labels, k):
    data = labelled_set(ids, {p: sorted(labels[p]) for p in ids})
    position = {p: i for i, p in enumerate(ids)}
    ordered = vectors[[position[p] for p in data.photo_ids]]
    ordered = ordered / np.linalg.norm(ordered, axis=1, keepdims=True)
    scores = exact_scores(ordered, data, k, np.arange(len(data)), batch=7)  # a batch size that does not divide n
    expected = brute_force(ids, vectors, labels, k)
    got_ids = [data.photo_ids[r] for r in scores.rows]
    assert sorted(got_ids) == sorted(expected)
    for i, qid in enumerate(got_ids):
        e = expected[qid]
        assert scores.precision[i] == pytest.approx(e["precision"])
        assert scores.recall[i] == pytest.approx(e["recall"])
        assert scores.ap[i] == pytest.approx(e["ap"])
        assert scores.ap_at_k[i] == pytest.approx(e["ap_k"])
        assert scores.chance[i] == pytest.approx(e["chance"])
        assert [data.photo_ids[j] for j in scores.topk[i]] == e["top"]
    return scores, expected


def test_single_label_metrics_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    ids = [f"p{i:03d}" for i in range(61)]
    classes = rng.integers(0, 5, size=len(ids))
    centres = rng.normal(size=(5, 12))
    vectors = centres[classes] + rng.normal(scale=1.2, size=(len(ids), 12))
    labels = {p: {f"c{c}"} for p, c in zip(ids, classes, strict=True)}
    labels["p060"] = {"lonely"}  # a class of one: no relevant photo, so not a scored query
    scores, expected = _compare(ids, vectors.astype(np.float32), labels, k=5)
    assert "p060" not in expected and len(scores.rows) == 60
    assert 0.3 < scores.precision.mean() < 1.0  # informative, not trivial


def test_multi_label_metrics_match_brute_force() -> None:
    rng = np.random.default_rng(4)
    ids = [f"m{i:02d}" for i in range(40)]
    words = ["sky", "tree", "lake", "dog", "city", "snow"]
    labels = {p: set(rng.choice(words, size=int(rng.integers(1, 3)), replace=False)) for p in ids}
    vectors = rng.normal(size=(len(ids), 8)).astype(np.float32)
    scores, _ = _compare(ids, vectors, labels, k=3)
    assert len(scores.rows) == 40


def test_ties_are_broken_by_id_hash_not_by_order() -> None:
    """Identical vectors: every photo ties, and the ranking must follow the id hash (brute force
    does the same), whatever order the photos came in."""
    ids = [f"t{i}" for i in range(12)]
    labels = {p: {"a" if i % 2 else "b"} for i, p in enumerate(ids)}
    vectors = np.ones((12, 4), np.float32)
    forward, _ = _compare(ids, vectors, labels, k=3)
    backward, _ = _compare(ids[::-1], vectors[::-1], labels, k=3)
    assert np.allclose(np.sort(forward.precision), np.sort(backward.precision))


def _shapes_data_dir(tmp_path: Path, capsys, per_class: int = 6) -> Path:
    images = tmp_path / "shapes"
    write_class_folders(images, per_class=per_class, seed=1)
    data = tmp_path / "data"
    assert run_cli(capsys, "extract", "--source", f"folder:{images}", "--data-dir", data).code == 0
    for model in ("color-histogram", "pixels"):
        assert run_cli(capsys, "embed", "--model", model, "--data-dir", data).code == 0
    return data


def test_eval_cli_table_json_chart_and_independent_numbers(tmp_path: Path, capsys) -> None:
    data = _shapes_data_dir(tmp_path, capsys)
    result = run_cli(capsys, "eval", "--model", "pixels", "--model", "color-histogram", "-k", "3", "--per-class",
                     "--format", "json", "--data-dir", data)
    assert result.code == 0, result.err
    rows = result.json()
    assert {(r["model"], r["class"]) for r in rows} == {
        (m, c) for m in ("pixels", "color-histogram")
        for c in (OVERALL, "red-circle", "blue-square", "green-triangle", "yellow-stripes")}
    # independent: vectors from the store files, labels from the folder names, brute force
    import pyarrow.parquet as pq

    photos = pq.read_table(data / "parquet" / "photos.parquet").to_pandas()
    label_of = {row.photo_id: {Path(row.photo_image_url).parent.name} for row in photos.itertuples()}
    for model in ("pixels", "color-histogram"):
        parts = sorted((data / "embeddings" / model.replace("-", "_")).glob("part-*.parquet"))
        table = pq.read_table(parts).to_pandas()
        ids = table["photo_id"].tolist()
        vectors = np.stack(table["embedding"].to_numpy()).astype(np.float32)
        expected = brute_force(ids, vectors, label_of, 3)
        overall = next(r for r in rows if r["model"] == model and r["class"] == OVERALL)
        assert overall["queries"] == 24
        assert overall["precision@3"] == pytest.approx(np.mean([e["precision"] for e in expected.values()]), abs=1e-4)
        assert overall["recall@3"] == pytest.approx(np.mean([e["recall"] for e in expected.values()]), abs=1e-4)
        assert overall["mAP"] == pytest.approx(np.mean([e["ap"] for e in expected.values()]), abs=1e-4)
        assert overall["mAP@3"] == pytest.approx(np.mean([e["ap_k"] for e in expected.values()]), abs=1e-4)
        assert overall["chance"] == pytest.approx(5 / 23, abs=1e-4)
        assert overall["precision@3"] > 2 * overall["chance"]  # separable classes, working encoders
        red = next(r for r in rows if r["model"] == model and r["class"] == "red-circle")
        reds = [e["precision"] for p, e in expected.items() if label_of[p] == {"red-circle"}]
        assert red["precision@3"] == pytest.approx(np.mean(reds), abs=1e-4)
    report = json.loads((data / "reports" / "eval-latest.json").read_text())
    assert report["photos"] == 24 and report["classes"] == 4
    with Image.open(report["chart"]) as chart:
        assert chart.format == "PNG" and chart.width > 300

    table = run_cli(capsys, "eval", "--data-dir", data)  # default: every stored model, overall rows only
    assert table.code == 0
    assert "precision@5" in table.out and "(all)" in table.out and "red-circle" not in table.out
    assert "color-histogram" in table.out and "pixels" in table.out


def test_eval_by_keywords(tmp_path: Path, capsys) -> None:
    """Keyword labels are sets (class name, file-name words); these classes share no word, so
    "shares a keyword" means "same class" and the numbers equal the class-collection ones."""
    data = _shapes_data_dir(tmp_path, capsys)
    by_class = run_cli(capsys, "eval", "--model", "pixels", "--format", "json", "--data-dir", data).json()
    by_keyword = run_cli(capsys, "eval", "--model", "pixels", "--labels", "keywords", "--per-class", "--format",
                         "json", "--data-dir", data)
    assert by_keyword.code == 0, by_keyword.err
    rows = by_keyword.json()
    assert len(rows) == 1  # several labels per photo: no per-class rows
    for column in ("queries", "precision@5", "recall@5", "mAP", "chance"):
        assert rows[0][column] == by_class[0][column]


def test_eval_holdout_and_query_sample(tmp_path: Path, capsys) -> None:
    data = _shapes_data_dir(tmp_path, capsys)
    import pyarrow.parquet as pq

    from pipeline.train.data import in_holdout

    ids = pq.read_table(data / "parquet" / "photos.parquet")["photo_id"].to_pylist()
    held = int(in_holdout(ids, 0.5).sum())
    rows = run_cli(capsys, "eval", "--model", "pixels", "--holdout", "0.5", "--format", "json", "--data-dir",
                   data).json()
    assert rows[0]["queries"] == held and 0 < held < 24
    sample = run_cli(capsys, "eval", "--model", "pixels", "--queries", "5", "--format", "json", "--data-dir",
                     data).json()
    assert sample[0]["queries"] == 5


def test_eval_through_the_index_reports_overlap(tmp_path: Path, capsys) -> None:
    data = _shapes_data_dir(tmp_path, capsys)
    assert run_cli(capsys, "load", "--data-dir", data).code == 0
    result = run_cli(capsys, "eval", "--model", "color-histogram", "--index", "-k", "3", "--format", "json",
                     "--data-dir", data)
    assert result.code == 0, result.err
    exact, index = result.json()
    assert exact["method"] == "exact" and index["method"].startswith("index (")
    assert index["queries"] == exact["queries"] == 24
    # 24 vectors: the index search finds the exact neighbours, so the numbers agree
    assert index["overlap@3"] == pytest.approx(1.0)
    assert index["precision@3"] == pytest.approx(exact["precision@3"])
    assert index["ms/query"] > 0


def test_eval_errors_name_the_problem(tmp_path: Path, capsys) -> None:
    data = _shapes_data_dir(tmp_path, capsys, per_class=3)
    missing = run_cli(capsys, "eval", "--model", "pca", "--data-dir", data)
    assert missing.code == 6 and "pca" in missing.err and "no stored vectors" in missing.err
    too_big = run_cli(capsys, "eval", "--model", "pixels", "-k", "50", "--data-dir", data)
    assert too_big.code == 2 and "-k 50" in too_big.err
    empty = run_cli(capsys, "eval", "--data-dir", tmp_path / "nothing")
    assert empty.code == 6 and "clipsql embed" in empty.err
    # the bundled sample has collections but not class collections: any collection is a label there
    no_labels = tmp_path / "unlabelled"
    assert run_cli(capsys, "extract", "--source", "sample", "--limit", "12", "--data-dir", no_labels).code == 0
    assert run_cli(capsys, "embed", "--model", "phash", "--data-dir", no_labels).code == 0
    rows = run_cli(capsys, "eval", "--model", "phash", "--format", "json", "--data-dir", no_labels).json()
    assert rows[0]["queries"] > 0
