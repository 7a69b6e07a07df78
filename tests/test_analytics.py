"""The analytics queries beyond the tutorial, each compared with numpy neighbours and pandas counts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.fixtures.vectors import VectorDb, build_vector_db
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def vdb(tmp_path_factory: pytest.TempPathFactory) -> VectorDb:
    return build_vector_db(tmp_path_factory.mktemp("analytics"), n=200, dim=16, clusters=8, seed=11)


def neighbours(vdb: VectorDb, photo_id: str, k: int) -> list[str]:
    v = vdb.vectors.astype(np.float64)
    q = vdb.vector(photo_id).astype(np.float64)
    d = 1 - v @ q / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))
    return [i for _, i in sorted((dist, i) for i, dist in zip(vdb.ids, d, strict=True) if i != photo_id)[:k]]


def downloads(vdb: VectorDb) -> pd.DataFrame:
    c = vdb.tables["conversions"]
    return c[c["conversion_type"] == "download"]


def query(capsys, vdb: VectorDb, name: str, **params) -> list[dict]:
    args = [a for key, value in params.items() for a in ("--param", f"{key}={value}")]
    result = run_cli(capsys, "query", name, *args, "--format", "json", "--data-dir", vdb.data_dir)
    assert result.code == 0, result.err
    return result.json()


def test_neighbour_downloads_by_country(vdb: VectorDb, capsys) -> None:
    target = vdb.ids[4]
    near = downloads(vdb)[lambda d: d["photo_id"].isin(neighbours(vdb, target, 10))]
    grouped = near.groupby("conversion_country").agg(downloads=("photo_id", "size"), photos=("photo_id", "nunique"))
    grouped = grouped.reset_index().sort_values(["downloads", "conversion_country"], ascending=[False, True])
    expected = [{"country": c, "downloads": int(d), "photos": int(p)}
                for c, d, p in grouped[["conversion_country", "downloads", "photos"]].values]
    assert expected and query(capsys, vdb, "neighbour_downloads_by_country", photo_id=target, k=10) == expected


def test_neighbour_search_keywords(vdb: VectorDb, capsys) -> None:
    target = vdb.ids[9]
    near = downloads(vdb)[lambda d: d["photo_id"].isin(neighbours(vdb, target, 15)) & (d["keyword"] != "")]
    grouped = near.groupby("keyword").agg(downloads=("photo_id", "size"), photos=("photo_id", "nunique")).reset_index()
    grouped = grouped.sort_values(["downloads", "keyword"], ascending=[False, True]).head(6)
    expected = [{"keyword": k, "downloads": int(d), "photos": int(p)} for k, d, p in grouped.values]
    assert expected and query(capsys, vdb, "neighbour_search_keywords", photo_id=target, k=15, n=6) == expected


def test_keyword_centroid_photos(vdb: VectorDb, capsys) -> None:
    counts = downloads(vdb)[lambda d: d["keyword"] != ""]["keyword"].str.lower().value_counts()
    keyword = counts.index[0]
    per_photo = downloads(vdb)[lambda d: d["keyword"].str.lower() == keyword].groupby("photo_id").size()
    centroid = sum(vdb.vector(i).astype(np.float64) * n for i, n in per_photo.items())
    v = vdb.vectors.astype(np.float64)
    d = 1 - v @ centroid / (np.linalg.norm(v, axis=1) * np.linalg.norm(centroid))
    expected = sorted((dist, i) for i, dist in zip(vdb.ids, d, strict=True))[:7]
    rows = query(capsys, vdb, "keyword_centroid_photos", keyword=keyword.upper(), k=7)
    assert [r["photo_id"] for r in rows] == [i for _, i in expected]
    np.testing.assert_allclose([r["distance"] for r in rows], [x for x, _ in expected], atol=1e-4)
    assert [r["keyword_downloads"] for r in rows] == [int(per_photo.get(i, 0)) for _, i in expected]
    assert query(capsys, vdb, "keyword_centroid_photos", keyword="nobody searched this") == []


def _suggestions(vdb: VectorDb, photo_id: str, k: int, n: int, keywords: pd.DataFrame | None = None) -> list[dict]:
    keywords = vdb.tables["keywords"] if keywords is None else keywords
    tagged = set(keywords["photo_id"])
    own = set(keywords[keywords["photo_id"] == photo_id]["keyword"])
    v = vdb.vectors.astype(np.float64)
    q = vdb.vector(photo_id).astype(np.float64)
    sims = v @ q / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))
    voters = sorted(((-s, i) for i, s in zip(vdb.ids, sims, strict=True) if i in tagged and i != photo_id))[:k]
    scores: dict[str, list[float]] = {}
    for negative, voter in voters:
        for keyword in keywords[keywords["photo_id"] == voter]["keyword"]:
            if keyword not in own:
                scores.setdefault(keyword, []).append(-negative)
    ranked = sorted(((-sum(w), kw, len(w)) for kw, w in scores.items()))[:n]
    return [{"photo_id": photo_id, "keyword": kw, "score": -s, "votes": votes} for s, kw, votes in ranked]


def test_suggest_keywords_by_neighbour_vote(vdb: VectorDb, capsys) -> None:
    target = vdb.ids[0]
    rows = query(capsys, vdb, "suggest_keywords", photo_id=target, k=8, n=4)
    expected = _suggestions(vdb, target, 8, 4)
    assert [(r["keyword"], r["votes"]) for r in rows] == [(e["keyword"], e["votes"]) for e in expected]
    np.testing.assert_allclose([r["score"] for r in rows], [e["score"] for e in expected], atol=1e-4)
    assert query(capsys, vdb, "suggest_keywords", k=5, n=3) == []  # every photo is tagged
    untagged = sorted(vdb.ids[20:23])
    result = run_cli(capsys, "sql", "ALTER TABLE keywords DELETE WHERE photo_id IN {ids:Array(String)}", "--param",
                     f"ids={json.dumps(untagged)}", "--write", "--data-dir", vdb.data_dir)
    assert result.code == 0, result.err
    keywords = vdb.tables["keywords"][~vdb.tables["keywords"]["photo_id"].isin(untagged)]
    rows = query(capsys, vdb, "suggest_keywords", k=5, n=3)
    assert sorted({r["photo_id"] for r in rows}) == untagged
    for photo_id in untagged:
        got = [(r["keyword"], r["votes"]) for r in rows if r["photo_id"] == photo_id]
        assert got == [(e["keyword"], e["votes"]) for e in _suggestions(vdb, photo_id, 5, 3, keywords)]
