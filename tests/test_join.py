"""Similarity joins (kNN and range, exact and through the index), checked against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.fixtures.vectors import VectorDb, build_vector_db
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def vdb(tmp_path_factory: pytest.TempPathFactory) -> VectorDb:
    return build_vector_db(tmp_path_factory.mktemp("join"), n=240, dim=24, clusters=10, seed=3)


def _ids_with_keyword(vdb: VectorDb, keyword: str) -> list[str]:
    kw = vdb.tables["keywords"]
    return sorted(set(kw[kw["keyword"].str.lower() == keyword.lower()]["photo_id"]))


def _two_keywords(vdb: VectorDb) -> tuple[str, str]:
    counts = vdb.tables["keywords"]["keyword"].value_counts()
    return counts.index[0], counts.index[1]


def reference_pairs(vdb: VectorDb, a_ids: list[str], b_ids: list[str], *, k: int | None = None,
                    radius: float | None = None, metric: str = "cosine") -> pd.DataFrame:
    """Brute force in float64: every (a, b) pair with a != b, ranked per a."""
    a = np.array([vdb.vector(i) for i in a_ids], dtype=np.float64)
    b = np.array([vdb.vector(i) for i in b_ids], dtype=np.float64)
    if metric == "cosine":
        dist = 1 - (a @ b.T) / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    else:
        dist = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    rows = []
    for i, a_id in enumerate(a_ids):
        pairs = sorted((d, b_id) for b_id, d in zip(b_ids, dist[i], strict=True) if b_id != a_id
                       and (radius is None or d <= radius))
        pairs = pairs if k is None else pairs[:k]
        rows += [(a_id, b_id, rank, d) for rank, (d, b_id) in enumerate(pairs, 1)]
    return pd.DataFrame(rows, columns=["a_photo_id", "b_photo_id", "rank", "distance"])


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["a_photo_id", "b_photo_id", "rank", "distance"])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_knn_join_between_two_keyword_sets_matches_numpy(vdb: VectorDb, capsys, metric: str) -> None:
    first, second = _two_keywords(vdb)
    expected = reference_pairs(vdb, _ids_with_keyword(vdb, first), _ids_with_keyword(vdb, second), k=3, metric=metric)
    result = run_cli(capsys, "join", "--a", f"keyword:{first}", "--b", f"keyword:{second}", "-k", "3",
                     "--metric", metric, "--batch-size", "7", "--format", "json", "--data-dir", vdb.data_dir)
    assert result.code == 0, result.err
    got = _frame(result.json())
    assert got[["a_photo_id", "b_photo_id", "rank"]].values.tolist() == \
        expected[["a_photo_id", "b_photo_id", "rank"]].values.tolist()
    np.testing.assert_allclose(got["distance"], expected["distance"], atol=1e-5)


def test_exact_self_join_range_to_parquet_matches_numpy(vdb: VectorDb, capsys, tmp_path: Path) -> None:
    out = tmp_path / "pairs.parquet"
    result = run_cli(capsys, "join", "--radius", "0.3", "--output", out, "--batch-size", "50",
                     "--data-dir", vdb.data_dir)
    assert result.code == 0, result.err
    got = pq.read_table(out).to_pandas()
    expected = reference_pairs(vdb, sorted(vdb.ids), sorted(vdb.ids), radius=0.3)
    assert len(expected) > len(vdb.ids)  # clusters make plenty of close pairs
    assert sorted(map(tuple, got[["a_photo_id", "b_photo_id"]].values.tolist())) == \
        sorted(map(tuple, expected[["a_photo_id", "b_photo_id"]].values.tolist()))
    assert (got["a_photo_id"] != got["b_photo_id"]).all() and (got["distance"] <= 0.3 + 1e-6).all()
    merged = got.merge(expected, on=["a_photo_id", "b_photo_id"])
    np.testing.assert_allclose(merged["distance_x"], merged["distance_y"], atol=1e-5)
    assert (merged["rank_x"] == merged["rank_y"]).mean() > 0.99  # ranks agree except for float ties
    assert f"{len(expected)} pairs written" in result.err


def test_index_join_agrees_with_exact_join(vdb: VectorDb, capsys) -> None:
    first, _ = _two_keywords(vdb)
    expected = reference_pairs(vdb, _ids_with_keyword(vdb, first), sorted(vdb.ids), k=4)
    result = run_cli(capsys, "join", "--a", f"keyword:{first}", "-k", "4", "--method", "index", "--format", "json",
                     "--data-dir", vdb.data_dir)
    assert result.code == 0, result.err
    got = _frame(result.json())
    shared = len(set(map(tuple, got[["a_photo_id", "b_photo_id"]].values.tolist()))
                 & set(map(tuple, expected[["a_photo_id", "b_photo_id"]].values.tolist())))
    assert shared / len(expected) >= 0.95


def test_sql_knn_join_query_matches_numpy(vdb: VectorDb, capsys) -> None:
    first, second = _two_keywords(vdb)
    expected = reference_pairs(vdb, _ids_with_keyword(vdb, first), _ids_with_keyword(vdb, second), k=2)
    result = run_cli(capsys, "query", "knn_join_keywords", "--param", f"a_keyword={first}", "--param",
                     f"b_keyword={second}", "--param", "k=2", "--format", "json", "--data-dir", vdb.data_dir)
    assert result.code == 0, result.err
    got = pd.DataFrame(result.json())
    assert got[["a_photo_id", "b_photo_id"]].values.tolist() == expected[["a_photo_id", "b_photo_id"]].values.tolist()


def test_join_needs_one_predicate_and_valid_sets(vdb: VectorDb, capsys) -> None:
    result = run_cli(capsys, "join", "--radius", "-0.5", "--data-dir", vdb.data_dir)
    assert result.code == 2 and "--radius must be a non-negative number" in result.err
    result = run_cli(capsys, "join", "--a", "shape:round", "--data-dir", vdb.data_dir)
    assert result.code == 2 and "unknown kind 'shape'" in result.err
    result = run_cli(capsys, "join", "--a", "keyword:no-such-keyword", "--format", "json", "--data-dir", vdb.data_dir)
    assert result.code == 0 and result.json() == []


def test_join_with_a_separately_loaded_image_set(vdb: VectorDb, capsys, tmp_path: Path) -> None:
    """Set B is another data directory's vectors of the same model (e.g. a labelled folder)."""
    from pipeline.store import EmbeddingStore
    from tests.fixtures.vectors import clustered_unit_vectors, embedding_table

    other = tmp_path / "other-set"
    ids = [f"other-{i:03d}" for i in range(30)]
    vectors = clustered_unit_vectors(30, 24, 5, seed=99)
    store = EmbeddingStore(other / "embeddings", vdb.model)
    store.ensure_meta(24, "synthetic")
    store.write_embeddings(embedding_table(vdb.model, ids, vectors))
    first, _ = _two_keywords(vdb)
    a_ids = _ids_with_keyword(vdb, first)
    a = np.array([vdb.vector(i) for i in a_ids], dtype=np.float64)
    dist = 1 - a @ vectors.astype(np.float64).T
    expected = [(a_id, ids[j]) for i, a_id in enumerate(a_ids) for j in np.argsort(dist[i], kind="stable")[:2]]
    result = run_cli(capsys, "join", "--a", f"keyword:{first}", "--b-data-dir", other, "-k", "2", "--format", "json",
                     "--data-dir", vdb.data_dir)
    assert result.code == 0, result.err
    assert [(r["a_photo_id"], r["b_photo_id"]) for r in result.json()] == expected
    result = run_cli(capsys, "join", "--b-data-dir", tmp_path / "nothing", "--data-dir", vdb.data_dir)
    assert result.code == 6 and "no vectors of model" in result.err
    result = run_cli(capsys, "join", "--b-data-dir", other, "--method", "index", "--data-dir", vdb.data_dir)
    assert result.code == 2 and "--b-data-dir joins with every stored vector" in result.err
