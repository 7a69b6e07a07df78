"""Search predicates, metrics, plans and filters, each checked against numpy and pandas.

The database holds 300 clustered 32-d unit vectors loaded through the real extract + load, with
the synthetic release's photos, keywords, collections and conversions around them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import Settings
from pipeline.errors import UsageError
from pipeline.search import SearchOptions, nearest, resolve_model
from pipeline.selection import parse_selection
from tests.fixtures.unsplash import HOSTILE_STRING
from tests.fixtures.vectors import VectorDb, build_vector_db
from tests.helpers import CliResult, database, env, run_cli


@pytest.fixture(scope="module")
def vdb(tmp_path_factory: pytest.TempPathFactory) -> VectorDb:
    return build_vector_db(tmp_path_factory.mktemp("search"))


def reference(vdb: VectorDb, query: np.ndarray, *, k: int | None = None, radius: float | None = None,
              metric: str = "cosine", allowed: set[str] | None = None, exclude: str = "") -> list[tuple[str, float]]:
    """Independent float64 numpy answer: (photo_id, distance) nearest first, ties by id."""
    v, q = vdb.vectors.astype(np.float64), query.astype(np.float64)
    if metric == "cosine":
        distances = 1.0 - (v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))
    else:
        distances = np.linalg.norm(v - q, axis=1)
    rows = sorted((d, i) for i, d in zip(vdb.ids, distances, strict=True)
                  if i != exclude and (allowed is None or i in allowed) and (radius is None or d <= radius))
    rows = rows if k is None else rows[:k]
    return [(i, float(d)) for d, i in rows]


def run_search(vdb: VectorDb, photo_id: str, **kwargs) -> tuple[list[tuple[str, float]], object]:
    options = SearchOptions(exclude=photo_id, **kwargs)
    with database(vdb.data_dir) as db:
        model = resolve_model(db, Settings(data_dir=vdb.data_dir))
        result = nearest(db, model, vdb.vector(photo_id), options)
    return [(r["photo_id"], r["distance"]) for r in result.rows], result


def assert_same(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in expected]
    np.testing.assert_allclose([d for _, d in got], [d for _, d in expected], atol=1e-4)


def recall(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> float:
    return len({i for i, _ in got} & {i for i, _ in expected}) / max(1, len(expected))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_knn_each_method_matches_numpy(vdb: VectorDb, metric: str) -> None:
    target = vdb.ids[7]
    expected = reference(vdb, vdb.vector(target), k=10, metric=metric, exclude=target)
    got, result = run_search(vdb, target, k=10, metric=metric, method="exact")
    assert_same(got, expected)
    assert result.plan.startswith("exact")
    for method in ("hnsw", "ivf"):
        got, result = run_search(vdb, target, k=10, metric=metric, method=method)
        assert result.plan.startswith(method)
        assert len(got) == 10 and recall(got, expected) >= 0.9
        np.testing.assert_allclose([d for _, d in got][:3], [d for _, d in expected][:3], atol=1e-4)


def test_auto_uses_the_hnsw_index(vdb: VectorDb) -> None:
    _, result = run_search(vdb, vdb.ids[0], k=5)
    assert result.plan.startswith("hnsw")


@pytest.mark.parametrize("metric,radius", [("cosine", 0.25), ("l2", 0.7)])
def test_range_returns_everything_within_the_radius(vdb: VectorDb, metric: str, radius: float) -> None:
    target = vdb.ids[3]
    expected = reference(vdb, vdb.vector(target), radius=radius, metric=metric, exclude=target)
    assert 5 < len(expected) < 100, "fixture should put a cluster within the radius"
    got, _ = run_search(vdb, target, radius=radius, metric=metric, method="exact")
    assert_same(got, expected)
    got, result = run_search(vdb, target, radius=radius, metric=metric, method="hnsw")
    assert result.plan.startswith("hnsw")
    assert recall(got, expected) >= 0.95 and all(d <= radius + 1e-6 for _, d in got)


def test_range_grows_the_candidate_list_until_it_passes_the_radius(vdb: VectorDb) -> None:
    target = vdb.ids[3]
    expected = reference(vdb, vdb.vector(target), radius=0.9, exclude=target)
    assert len(expected) > 64  # more than the first round fetches
    got, result = run_search(vdb, target, radius=0.9, method="hnsw")
    assert "rounds" in result.plan
    assert recall(got, expected) >= 0.95


def _downloads(vdb: VectorDb) -> pd.Series:
    c = vdb.tables["conversions"]
    return c[c["conversion_type"] == "download"].groupby("photo_id").size()


def _allowed(vdb: VectorDb, kind: str, value: str) -> set[str]:
    photos, keywords, collections = vdb.tables["photos"], vdb.tables["keywords"], vdb.tables["collections"]
    if kind == "keyword":
        return set(keywords[keywords["keyword"].str.lower() == value.lower()]["photo_id"])
    if kind == "country":
        return set(photos[photos["photo_location_country"].str.lower() == value.lower()]["photo_id"])
    if kind == "photographer":
        return set(photos[photos["photographer_username"] == value]["photo_id"])
    if kind == "collection":
        return set(collections[(collections["collection_id"] == value) | (collections["collection_title"] == value)]
                   ["photo_id"])
    if kind == "since":
        submitted = pd.to_datetime(photos["photo_submitted_at"], errors="coerce", format="mixed")
        return set(photos[submitted >= pd.Timestamp(value)]["photo_id"])
    if kind == "min_downloads":
        downloads = _downloads(vdb)
        return set(downloads[downloads >= int(value)].index)
    raise AssertionError(kind)


def _common(series: pd.Series) -> str:
    return series[series != ""].value_counts().index[0]


@pytest.mark.parametrize("kind", ["keyword", "country", "photographer", "collection", "since", "min_downloads"])
def test_filtered_knn_matches_numpy_over_the_pandas_selection(vdb: VectorDb, kind: str) -> None:
    photos = vdb.tables["photos"]
    value = {
        "keyword": lambda: _common(vdb.tables["keywords"]["keyword"]),
        "country": lambda: _common(photos["photo_location_country"]).upper(),
        "photographer": lambda: _common(photos["photographer_username"]),
        "collection": lambda: _common(vdb.tables["collections"]["collection_title"]),
        "since": lambda: "2021-06-01",
        "min_downloads": lambda: str(int(_downloads(vdb).median())),
    }[kind]()
    allowed = _allowed(vdb, kind, value)
    assert 0 < len(allowed) < len(vdb.ids)
    target = vdb.ids[11]
    expected = reference(vdb, vdb.vector(target), k=8, allowed=allowed, exclude=target)
    within = parse_selection(f"{kind}:{value}")
    got, result = run_search(vdb, target, k=8, method="exact", within=within)
    assert_same(got, expected)
    got, result = run_search(vdb, target, k=8, within=within)
    assert len(got) == min(8, len(allowed - {target}))
    assert {i for i, _ in got} <= allowed
    assert recall(got, expected) >= 0.85


def test_selective_filter_falls_back_to_an_exact_scan_and_warns_when_short(vdb: VectorDb) -> None:
    target = vdb.ids[0]
    far = [i for i, _ in reference(vdb, vdb.vector(target), exclude=target)[-3:]]  # the three farthest photos
    within = parse_selection(f"ids:{','.join(far)}")
    got, result = run_search(vdb, target, k=5, within=within, max_fetch=64)
    assert sorted(i for i, _ in got) == sorted(far)
    assert result.plan.startswith("exact")
    assert any("pre-filtered" in w for w in result.warnings)
    assert any("only 3 photos match" in w for w in result.warnings)


def test_several_filters_all_hold_and_raw_where(vdb: VectorDb) -> None:
    photos = vdb.tables["photos"]
    country = _common(photos["photo_location_country"])
    least = int(_downloads(vdb).quantile(0.3))
    allowed = _allowed(vdb, "country", country) & _allowed(vdb, "min_downloads", str(least))
    target = vdb.ids[5]
    expected = reference(vdb, vdb.vector(target), k=6, allowed=allowed, exclude=target)
    got, _ = run_search(vdb, target, k=6, method="exact",
                        within=parse_selection([f"country:{country}", f"min-downloads:{least}"]))
    assert_same(got, expected)
    where = parse_selection("where:photo_width > 4000", allow_sql=True)
    wide = set(photos[pd.to_numeric(photos["photo_width"], errors="coerce") > 4000]["photo_id"])
    got, _ = run_search(vdb, target, k=300, method="exact", within=where)
    assert {i for i, _ in got} == wide - {target}


def test_cli_search_filters_and_hostile_values(vdb: VectorDb, capsys) -> None:
    target = vdb.ids[2]
    keyword = _common(vdb.tables["keywords"]["keyword"])
    result = run_cli(capsys, "search", f"--photo-id={target}", "-k", "4", "--keyword", keyword, "--metric", "l2",
                     "--format", "json", "--data-dir", vdb.data_dir)
    assert result.code == 0, result.err
    expected = reference(vdb, vdb.vector(target), k=4, metric="l2", allowed=_allowed(vdb, "keyword", keyword),
                         exclude=target)
    assert [r["photo_id"] for r in result.json()] == [i for i, _ in expected]
    assert "plan hnsw" in result.err
    for kind in ("keyword", "country", "collection", "photographer"):
        result = run_cli(capsys, "search", f"--photo-id={target}", f"--{kind}", HOSTILE_STRING, "--format", "json",
                         "--data-dir", vdb.data_dir)
        allowed = _allowed(vdb, kind, HOSTILE_STRING) - {target}  # the fixture uses it in some fields
        assert result.code == 0, result.err
        got = {r["photo_id"] for r in result.json()}
        assert got <= allowed and len(got) == min(10, len(allowed))
        if len(allowed) < 10:
            assert f"only {len(allowed)} photos match" in result.err
    with database(vdb.data_dir) as db:
        assert db.count("photos") == len(vdb.ids)


@pytest.mark.parametrize("args,message", [
    (["--radius", "-1"], "--radius must be a non-negative number"),
    (["--in", "colour:red"], "unknown kind 'colour'"),
    (["--since", "last week"], "expected a date as YYYY-MM-DD"),
    (["--min-downloads", "many"], "is not a valid UInt64"),
    (["--where", "1; DROP TABLE photos"], "may not contain ';'"),
    (["--method", "ivf", "--nprobe", "0"], "argument --nprobe: must be at least 1, got 0"),
])
def test_bad_search_arguments_are_clear_errors(vdb: VectorDb, capsys, args: list[str], message: str) -> None:
    try:
        result = run_cli(capsys, "search", f"--photo-id={vdb.ids[0]}", *args, "--data-dir", vdb.data_dir)
    except SystemExit as exc:  # argparse rejects it before clipsql runs
        result = CliResult(int(exc.code), "", capsys.readouterr().err)
    assert result.code == 2, result.err
    assert message in result.err and "Traceback" not in result.err


def test_selection_parameters_are_bound_not_formatted() -> None:
    condition, params = parse_selection(["keyword:x' OR 1=1 --", "country:Iceland"]).condition()
    assert "OR 1=1" not in condition and params == {"s0": "x' OR 1=1 --", "s1": "Iceland"}
    assert "{s0:String}" in condition and "{s1:String}" in condition
    with pytest.raises(UsageError, match="not allowed here"):
        parse_selection("where:1=1")


def test_photo_query_with_path_like_tmp(tmp_path: Path) -> None:
    # a selection file name cannot be reached with path tricks
    with pytest.raises(UsageError, match="unknown kind"):
        parse_selection("../tables/photos:x")


def test_verify_reports_recall_and_fails_below_the_threshold(vdb: VectorDb, capsys) -> None:
    result = run_cli(capsys, "verify", "--queries", "25", "--format", "json", "--data-dir", vdb.data_dir)
    assert result.code == 0, result.err
    rows = {row["method"]: row for row in result.json()}
    assert set(rows) == {"exact", "hnsw", "ivf"}
    assert rows["exact"]["recall"] == 1.0 and rows["hnsw"]["recall"] >= 0.9 and rows["ivf"]["recall"] >= 0.8
    assert all(row["queries"] == 25 and row["p50_ms"] > 0 for row in rows.values())
    with database(vdb.data_dir) as db:
        cells = db.count("ivf_synthetic_32")
    every_cell = run_cli(capsys, "verify", "--queries", "10", "--method", "ivf", "--nprobe", str(cells),
                         "--min-recall", "1", "--format", "json", "--data-dir", vdb.data_dir)
    assert every_cell.code == 0 and every_cell.json()[1]["recall"] == 1.0, every_cell.err  # all cells = exact
    one_cell = run_cli(capsys, "verify", "--queries", "25", "--method", "ivf", "--nprobe", "1", "--min-recall", "0.999",
                       "--format", "json", "--data-dir", vdb.data_dir)
    assert one_cell.code == 1
    assert one_cell.json()[1]["recall"] < 0.999 and "recall@10 below 0.999: ivf" in one_cell.err


def test_ivf_cells_partition_the_vectors_by_nearest_centroid(vdb: VectorDb) -> None:
    with database(vdb.data_dir) as db:
        centroids = db.query_arrow("SELECT cell, centroid, vectors FROM ivf_synthetic_32 ORDER BY cell")
        cells = db.query_arrow("SELECT photo_id, cell FROM embeddings_synthetic_32")
    matrix = np.array(centroids["centroid"].to_pylist(), dtype=np.float32)
    assert len(matrix) == round(np.sqrt(len(vdb.ids)))  # default: about sqrt(n) cells
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    by_id = dict(zip(cells["photo_id"].to_pylist(), cells["cell"].to_pylist(), strict=True))
    expected = np.argmax(vdb.vectors @ matrix.T, axis=1)
    assert [by_id[i] for i in vdb.ids] == expected.tolist()
    assert sum(centroids["vectors"].to_pylist()) == len(vdb.ids)


def test_index_parameters_are_configurable_and_ivf_can_be_off(tmp_path: Path, capsys) -> None:
    small = build_vector_db(tmp_path, n=60, dim=8, clusters=3, seed=5,
                            load_args=("--ivf-lists", "0", "--index-quantization", "f32", "--index-m", "16",
                                       "--index-ef-construction", "64"))
    with database(small.data_dir) as db:
        definition = db.command("SELECT type_full FROM system.data_skipping_indices "
                                "WHERE table = 'embeddings_synthetic_8'").replace("\\", "")
        assert "'f32', 16, 64" in definition
        assert not db.table_exists("ivf_synthetic_8")
    result = run_cli(capsys, "search", f"--photo-id={small.ids[0]}", "--method", "ivf", "--data-dir", small.data_dir)
    assert result.code == 2 and "has no IVF cells" in result.err
    result = run_cli(capsys, "load", "--ivf-lists", "4", "--data-dir", small.data_dir)  # a parameter change rebuilds
    assert result.code == 0, result.err
    with database(small.data_dir) as db:
        assert db.count("ivf_synthetic_8") == 4
    with env(CLIPSQL_INDEX_QUANTIZATION="q4"):
        result = run_cli(capsys, "load", "--data-dir", small.data_dir)
    assert result.code == 2 and "CLIPSQL_INDEX_QUANTIZATION" in result.err
