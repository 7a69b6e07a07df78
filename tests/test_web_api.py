"""The web app's JSON API and pages against a real chDB database, checked with numpy and pandas.

One module-wide app: the server opens the database once for its lifetime, as `clipsql serve`
does, and FastAPI's TestClient drives it in-process.
"""

from __future__ import annotations

import io
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pipeline.config import load_settings
from pipeline.encoders import load_encoder
from pipeline.images import decode_image, thumbnail_url
from pipeline.queries import run_query
from pipeline.search import text_vector
from pipeline.web import WebBackend, create_app
from pipeline.web.imagery import KEEP_PIXELS
from tests.fixtures.unsplash import image_bytes
from tests.fixtures.web_data import WebData, build_web_data
from tests.helpers import TEST_ENV, env, run_cli

UPLOAD_LIMIT = 10 << 20
XSS = '<script>alert("x")</script> & <b>bold</b>'


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path, fixture_server) -> WebData:
    with env(**TEST_ENV):
        return build_web_data(tmp_path_factory.mktemp("web"), tiny_clip_dir, n=40,
                              image_base_url=fixture_server.image_base_url, http_photos=3, xss=XSS)


@pytest.fixture(scope="module")
def client(web: WebData) -> Iterator[TestClient]:
    with env(**TEST_ENV):
        backend = WebBackend.open(load_settings({"data_dir": web.data_dir}))
    try:
        yield TestClient(create_app(backend), raise_server_exceptions=False)
    finally:
        backend.close()


def cosine_knn(ids: list[str], vectors: np.ndarray, query: np.ndarray, k: int | None = None, exclude: str = "",
               allowed: set[str] | None = None, radius: float | None = None) -> list[tuple[str, float]]:
    """Exact cosine distances in float64, ties by id, like the SQL."""
    v = vectors.astype(np.float64)
    q = query.astype(np.float64)
    distances = 1.0 - (v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))
    rows = sorted((float(d), i) for i, d in zip(ids, distances, strict=True)
                  if i != exclude and (allowed is None or i in allowed) and (radius is None or d <= radius + 1e-6))
    rows = rows if k is None else rows[:k]
    return [(i, d) for d, i in rows]


def downloads_by_photo(web: WebData) -> pd.Series:
    conversions = web.tables["conversions"]
    return conversions[conversions["conversion_type"] == "download"].groupby("photo_id").size()


# -- models, sets, OpenAPI -------------------------------------------------------------------------------------
def test_models_sets_and_openapi(client: TestClient, web: WebData) -> None:
    models = client.get("/api/models").json()
    ids, _ = web.vectors()
    assert models == [{"name": web.model, "dim": 16, "encoder": "clip", "vectors": len(ids), "text": True,
                       "default": True}]

    sets = client.get("/api/sets", params={"per_kind": 50}).json()
    assert sets[0] == {"kind": "all", "value": "all", "label": "All photos", "photos": len(web.ids)}
    collections = web.tables["collections"].groupby("collection_id")["photo_id"].nunique()
    got = {s["value"]: s["photos"] for s in sets if s["kind"] == "collection"}
    assert got == {f"collection:{c}": int(n) for c, n in collections.items()}
    keywords = web.tables["keywords"].assign(k=lambda f: f["keyword"].str.lower()).groupby("k")["photo_id"].nunique()
    got = [(s["value"], s["photos"]) for s in sets if s["kind"] == "keyword"]
    expected = sorted(((f"keyword:{k}", int(n)) for k, n in keywords.items()), key=lambda kv: (-kv[1], kv[0]))
    assert got == expected[:50]
    countries = web.tables["photos"].query("photo_location_country != ''").groupby("photo_location_country").size()
    got = {s["value"]: s["photos"] for s in sets if s["kind"] == "country"}
    assert got == {f"country:{c}": int(n) for c, n in countries.items()}

    spec = client.get("/openapi.json").json()
    for path in ("/api/search", "/api/gallery", "/api/uploads", "/api/photos/{photo_id}", "/api/analytics",
                 "/api/models", "/api/sets", "/thumbs/{photo_id}"):
        assert path in spec["paths"], path
    k = next(p for p in spec["paths"]["/api/search"]["get"]["parameters"] if p["name"] == "k")
    assert k["schema"]["minimum"] == 1 and k["schema"]["maximum"] == 200
    assert client.get("/docs").status_code == 404  # Swagger UI loads from a CDN: switched off


# -- gallery ---------------------------------------------------------------------------------------------------
def test_gallery_pages_cover_the_key_set_once_and_shuffle_stably(client: TestClient, web: WebData) -> None:
    embedded, _ = web.vectors()
    seen: list[str] = []
    first = client.get("/api/gallery", params={"per_page": 7}).json()
    assert first["total"] == len(embedded) and first["pages"] == math.ceil(len(embedded) / 7)
    for page in range(1, first["pages"] + 1):
        body = client.get("/api/gallery", params={"per_page": 7, "page": page}).json()
        seen += [p["photo_id"] for p in body["photos"]]
    assert seen == sorted(embedded)  # id order, each once
    past = client.get("/api/gallery", params={"per_page": 7, "page": first["pages"] + 3}).json()
    assert past["photos"] == [] and past["total"] == len(embedded)

    shuffled = [p["photo_id"] for p in client.get("/api/gallery", params={"per_page": 100, "seed": 42}).json()["photos"]]
    again = [p["photo_id"] for p in client.get("/api/gallery", params={"per_page": 100, "seed": 42}).json()["photos"]]
    other = [p["photo_id"] for p in client.get("/api/gallery", params={"per_page": 100, "seed": 43}).json()["photos"]]
    assert shuffled == again and sorted(shuffled) == sorted(embedded)
    assert shuffled != sorted(embedded) and shuffled != other


def test_gallery_key_set_and_keyword_filter_match_pandas(client: TestClient, web: WebData) -> None:
    embedded, _ = web.vectors()
    keywords = web.tables["keywords"]
    photos = web.tables["photos"]
    word = keywords["keyword"].value_counts().index[0]
    body = client.get("/api/gallery", params={"key_set": f"keyword:{word.upper()}", "per_page": 100}).json()
    expected = set(keywords[keywords["keyword"].str.lower() == word.lower()]["photo_id"]) & set(embedded)
    assert {p["photo_id"] for p in body["photos"]} == expected and body["total"] == len(expected)

    text = "ca"  # substring of keywords and descriptions, case-insensitive ("café", "cat", "Canada"...)
    body = client.get("/api/gallery", params={"q": text.upper(), "per_page": 100}).json()
    by_keyword = set(keywords[keywords["keyword"].str.lower().str.contains(text, regex=False)]["photo_id"])
    by_description = set(photos[photos["photo_description"].str.lower().str.contains(text, regex=False)]["photo_id"])
    assert {p["photo_id"] for p in body["photos"]} == (by_keyword | by_description) & set(embedded)

    country = photos.query("photo_location_country != ''")["photo_location_country"].iloc[0]
    both = client.get("/api/gallery", params=[("key_set", f"country:{country}"), ("key_set", f"keyword:{word}"),
                                              ("per_page", 100)]).json()
    in_country = set(photos[photos["photo_location_country"] == country]["photo_id"])
    assert {p["photo_id"] for p in both["photos"]} == expected & in_country


# -- search ----------------------------------------------------------------------------------------------------
def test_search_by_photo_matches_numpy_in_both_metrics(client: TestClient, web: WebData) -> None:
    ids, vectors = web.vectors()
    target = ids[5]
    expected = cosine_knn(ids, vectors, vectors[5], k=6, exclude=target)
    body = client.get("/api/search", params={"photo_id": target, "k": 6, "method": "exact"}).json()
    assert body["key"]["kind"] == "photo" and body["key"]["image"] == f"/thumbs/{target}"
    assert [r["photo_id"] for r in body["results"]] == [i for i, _ in expected]
    assert [r["rank"] for r in body["results"]] == list(range(1, 7))
    np.testing.assert_allclose([r["distance"] for r in body["results"]], [d for _, d in expected], atol=1e-5)

    l2 = client.get("/api/search", params={"photo_id": target, "k": 6, "metric": "l2", "method": "exact"}).json()
    assert [r["photo_id"] for r in l2["results"]] == [i for i, _ in expected]
    np.testing.assert_allclose([r["distance"] for r in l2["results"]],
                               [float(np.linalg.norm(vectors[ids.index(i)] - vectors[5])) for i, _ in expected], atol=1e-5)

    index = client.get("/api/search", params={"photo_id": target, "k": 6}).json()  # the HNSW plan at this size is exact
    assert index["plan"].startswith("hnsw") and [r["photo_id"] for r in index["results"]] == [i for i, _ in expected]


def test_range_predicate_returns_everything_within_the_threshold(client: TestClient, web: WebData) -> None:
    ids, vectors = web.vectors()
    target = ids[2]
    all_distances = [d for _, d in cosine_knn(ids, vectors, vectors[2], exclude=target)]
    radius = float(np.median(all_distances))
    expected = cosine_knn(ids, vectors, vectors[2], exclude=target, radius=radius)
    body = client.get("/api/search", params={"photo_id": target, "predicate": "range", "radius": radius}).json()
    assert body["predicate"] == "range" and body["radius"] == pytest.approx(radius)
    assert [r["photo_id"] for r in body["results"]] == [i for i, _ in expected]
    assert body["total"] == len(expected) and all(r["distance"] <= radius + 1e-6 for r in body["results"])

    l2_radius = math.sqrt(2 * radius)  # the same photos in the L2 metric
    l2 = client.get("/api/search", params={"photo_id": target, "predicate": "range", "radius": l2_radius,
                                           "metric": "l2"}).json()
    assert [r["photo_id"] for r in l2["results"]] == [i for i, _ in expected]


def test_join_set_restricts_the_results(client: TestClient, web: WebData) -> None:
    ids, vectors = web.vectors()
    collections = web.tables["collections"]
    collection_id = collections["collection_id"].value_counts().index[0]
    members = set(collections[collections["collection_id"] == collection_id]["photo_id"])
    target = next(i for i in ids if i not in members)
    expected = cosine_knn(ids, vectors, vectors[ids.index(target)], k=4, exclude=target, allowed=members)
    body = client.get("/api/search", params={"photo_id": target, "k": 4, "join_set": f"collection:{collection_id}",
                                             "method": "exact"}).json()
    assert [r["photo_id"] for r in body["results"]] == [i for i, _ in expected]
    assert body["join_set"] == [f"collection:{collection_id}"]


def test_text_search_with_minus_matches_the_encoder(client: TestClient, web: WebData, tiny_clip_dir: Path) -> None:
    ids, vectors = web.vectors()
    encoder = load_encoder(str(tiny_clip_dir), "cpu")
    query = text_vector(encoder, ["a red fox"], ["snow"])
    expected = cosine_knn(ids, vectors, query, k=5)
    body = client.get("/api/search", params={"text": "a red fox", "minus": "snow", "k": 5, "method": "exact"}).json()
    assert body["key"]["kind"] == "text" and body["key"]["text"] == ["a red fox"] and body["key"]["minus"] == ["snow"]
    assert [r["photo_id"] for r in body["results"]] == [i for i, _ in expected]
    np.testing.assert_allclose([r["distance"] for r in body["results"]], [d for _, d in expected], atol=1e-4)


def test_upload_and_image_url_search_the_same_image(client: TestClient, web: WebData, tiny_clip_dir: Path,
                                                     fixture_server) -> None:
    ids, vectors = web.vectors()
    photo = web.http_ids[0]
    data = image_bytes(photo)  # what the fixture server serves for it
    uploaded = client.post("/api/uploads", files={"file": ("mine.jpg", data, "image/jpeg")})
    assert uploaded.status_code == 200, uploaded.text
    info = uploaded.json()
    assert (info["width"], info["height"]) == Image.open(io.BytesIO(data)).size

    encoder = load_encoder(str(tiny_clip_dir), "cpu")
    query = encoder.embed([decode_image(data, KEEP_PIXELS)])[0]
    expected = cosine_knn(ids, vectors, query, k=5)
    body = client.get("/api/search", params={"upload": info["upload_id"], "k": 5, "method": "exact"}).json()
    assert body["key"]["kind"] == "upload" and body["key"]["image"] == f"/uploads/{info['upload_id']}"
    assert [r["photo_id"] for r in body["results"]] == [i for i, _ in expected]
    np.testing.assert_allclose([r["distance"] for r in body["results"]], [d for _, d in expected], atol=1e-4)

    by_url = client.get("/api/search", params={"image_url": fixture_server.image_url(photo), "k": 5,
                                               "method": "exact"}).json()
    assert by_url["key"]["kind"] == "url" and by_url["key"]["upload_id"] == info["upload_id"]  # same bytes, same id
    assert by_url["results"] == body["results"]
    picture = client.get(f"/uploads/{info['upload_id']}")
    assert picture.status_code == 200
    assert Image.open(io.BytesIO(picture.content)).size == (info["width"], info["height"])


def test_concurrent_requests_share_the_one_database(client: TestClient, web: WebData) -> None:
    ids, vectors = web.vectors()
    targets = ids[:8]
    with ThreadPoolExecutor(max_workers=8) as pool:
        bodies = list(pool.map(lambda t: client.get("/api/search", params={"photo_id": t, "k": 3,
                                                                           "method": "exact"}).json(), targets))
    for target, body in zip(targets, bodies, strict=True):
        expected = cosine_knn(ids, vectors, vectors[ids.index(target)], k=3, exclude=target)
        assert [r["photo_id"] for r in body["results"]] == [i for i, _ in expected]


# -- photos and analytics --------------------------------------------------------------------------------------
def test_photo_info_matches_the_tables(client: TestClient, web: WebData) -> None:
    downloads = downloads_by_photo(web)
    for photo_id in (web.ids[0], web.ids[4], web.ids[5]):  # leading '-', the hostile description, maybe no downloads
        body = client.get(f"/api/photos/{photo_id}").json()
        row = web.tables["photos"].set_index("photo_id").loc[photo_id]
        assert body["photo_description"] == row["photo_description"]
        assert body["photographer_username"] == row["photographer_username"]
        keywords = web.tables["keywords"].query("photo_id == @photo_id")["keyword"]
        assert body["keywords"] == sorted(set(keywords))
        titles = web.tables["collections"].query("photo_id == @photo_id")["collection_title"]
        assert body["collections"] == sorted(set(titles))
        assert body["downloads"] == int(downloads.get(photo_id, 0))
    assert client.get(f"/api/photos/{web.ids[4]}").json()["photo_description"] == XSS


def test_analytics_match_pandas_for_any_result_list(client: TestClient, web: WebData) -> None:
    downloads = downloads_by_photo(web)
    conversions = web.tables["conversions"]
    never = next(i for i in web.ids if i not in downloads.index)
    ranked = [web.ids[10], never, web.ids[3], "no-such-photo", web.ids[20], web.ids[10]]
    body = client.get("/api/analytics", params=[("ids", i) for i in ranked] + [("n", 3)]).json()
    distinct = list(dict.fromkeys(ranked))
    assert body["downloads"] == [{"photo_id": i, "downloads": int(downloads.get(i, 0))} for i in distinct]
    counts = [int(downloads.get(i, 0)) for i in distinct]
    best = distinct[counts.index(max(counts))]  # ties: the better ranked
    assert body["most_downloaded"] == best and body["most_downloaded_downloads"] == max(counts)
    mine = conversions[(conversions["photo_id"] == best) & (conversions["conversion_type"] == "download")
                       & (conversions["keyword"] != "")]
    top = mine.groupby("keyword").size().reset_index(name="downloads")
    top = top.sort_values(["downloads", "keyword"], ascending=[False, True]).head(3)
    assert body["keywords"] == [{"keyword": k, "downloads": int(n)} for k, n in zip(top["keyword"], top["downloads"],
                                                                                    strict=True)]
    empty = client.get("/api/analytics", params={"ids": never}).json()
    assert empty == {"downloads": [{"photo_id": never, "downloads": 0}], "most_downloaded": None,
                     "most_downloaded_downloads": 0, "keywords": []}


def test_the_two_query_files_match_pandas(client: TestClient, web: WebData) -> None:
    backend: WebBackend = client.app.state.backend
    downloads = downloads_by_photo(web)
    ids = [web.ids[7], "missing", web.ids[1], web.ids[7]]
    with backend.database() as db:
        rows = run_query(db, backend.settings, "downloads_of_photos", {"ids": ids}).to_pylist()
        assert rows == [{"photo_id": i, "downloads": int(downloads.get(i, 0))} for i in dict.fromkeys(ids)]
        photo = downloads.idxmax()
        keywords = run_query(db, backend.settings, "top_download_keywords", {"photo_id": photo}).to_pylist()
    conversions = web.tables["conversions"]
    mine = conversions[(conversions["photo_id"] == photo) & (conversions["conversion_type"] == "download")
                       & (conversions["keyword"] != "")].groupby("keyword").size().reset_index(name="downloads")
    mine = mine.sort_values(["downloads", "keyword"], ascending=[False, True]).head(5)
    assert keywords == [{"keyword": k, "downloads": int(n)} for k, n in zip(mine["keyword"], mine["downloads"],
                                                                            strict=True)]


# -- thumbnails ------------------------------------------------------------------------------------------------
def test_thumbnails_have_caching_headers_and_304(client: TestClient, web: WebData) -> None:
    photo = web.ids[0]
    response = client.get(f"/thumbs/{photo}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"].startswith("public, max-age=")
    etag = response.headers["etag"]
    picture = Image.open(io.BytesIO(response.content))
    source = Image.open(web.image_path(photo))
    assert max(picture.size) <= 360 and picture.size == source.size  # small images are not upscaled
    pixels = np.asarray(picture.convert("RGB"), dtype=np.float64)
    assert np.abs(pixels - np.asarray(source.convert("RGB"), dtype=np.float64)).mean() < 8  # the same picture
    again = client.get(f"/thumbs/{photo}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    large = client.get(f"/thumbs/{photo}", params={"size": "large"})
    assert large.status_code == 200 and large.headers["etag"] != etag


def test_http_photos_come_from_the_cache_and_are_fetched_only_when_missing(client: TestClient, web: WebData,
                                                                           fixture_server) -> None:
    backend: WebBackend = client.app.state.backend
    photo = web.http_ids[1]
    url = web.tables["photos"].set_index("photo_id").loc[photo, "photo_image_url"]
    path = f"/img/{photo}.jpg"
    before = fixture_server.requests[path]
    assert client.get(f"/thumbs/{photo}").status_code == 200
    assert fixture_server.requests[path] == before  # cached by the embed stage: no network
    backend.fetcher.cache_path(thumbnail_url(url)).unlink()
    backend.thumbs._items.clear()
    assert client.get(f"/thumbs/{photo}").status_code == 200
    assert fixture_server.requests[path] == before + 1  # missing: fetched once, into the cache
    assert backend.fetcher.cache_path(thumbnail_url(url)).exists()
    backend.thumbs._items.clear()
    assert client.get(f"/thumbs/{photo}").status_code == 200
    assert fixture_server.requests[path] == before + 1


# -- bad input -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "status", "message"), [
    ({"photo_id": "no-such-photo"}, 404, "photo id 'no-such-photo' is not in the photos table"),
    ({"photo_id": "x", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ({"photo_id": "x", "k": 5000}, 422, "k: Input should be less than or equal to 200"),
    ({"photo_id": "x", "k": "ten"}, 422, "k: Input should be a valid integer"),
    ({"photo_id": "x", "predicate": "range", "radius": 3}, 422, "radius: Input should be less than or equal to 2"),
    ({"photo_id": "x", "predicate": "range"}, 400, "radius is required for a range predicate"),
    ({"photo_id": "x", "metric": "manhattan"}, 400, "metric must be one of cosine, l2"),
    ({"photo_id": "x", "predicate": "within"}, 400, "predicate must be knn or range"),
    ({"photo_id": "x", "join_set": "where:1=1"}, 400, "raw SQL selections (where:...) are not allowed"),
    ({"photo_id": "x", "join_set": "colour:red"}, 400, "join set: selection 'colour:red': unknown kind 'colour'"),
    ({"photo_id": "x", "key_set": "since:yesterday"}, 400, "key set: selection 'since:yesterday'"),
    ({"photo_id": "x", "text": "cat"}, 400, "give exactly one key"),
    ({}, 400, "give exactly one key"),
    ({"minus": "cat", "upload": "abc"}, 400, "minus subtracts texts from a text query"),
    ({"upload": "0123456789abcdef"}, 404, "upload the image again"),
    ({"image_url": "file:///etc/passwd"}, 400, "give an http(s) URL"),
    ({"text": "x" * 501}, 400, "at most 500 characters"),
])
def test_bad_search_input_gets_a_clear_json_error(client: TestClient, params: dict, status: int, message: str) -> None:
    response = client.get("/api/search", params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert message in body["error"] and body["status"] == status
    assert "Traceback" not in response.text
    if "join_set" in params and "colour" in params["join_set"]:
        assert "where" not in body["error"]  # the web does not offer raw SQL


def test_unreachable_image_urls_and_unknown_photos(client: TestClient, web: WebData, fixture_server) -> None:
    fixture_server.set_image("gone", "404")
    response = client.get("/api/search", params={"image_url": fixture_server.image_url("gone")})
    assert response.status_code == 400 and "cannot fetch it: http 404" in response.json()["error"]
    fixture_server.set_image("page", "html")
    response = client.get("/api/search", params={"image_url": fixture_server.image_url("page")})
    assert response.status_code == 415 and "not an image (HTML page)" in response.json()["error"]
    assert client.get("/api/photos/no-such-photo").status_code == 404
    response = client.get("/thumbs/no-such-photo")
    assert response.status_code == 404 and "photo id &#39;no-such-photo&#39; is not in the photos table" in response.text
    assert client.get(f"/thumbs/{web.ids[0]}", params={"size": "huge"}).status_code == 400
    response = client.get("/api/analytics", params=[("ids", str(i)) for i in range(1001)])
    assert response.status_code == 400 and "at most 1000" in response.json()["error"]
    response = client.get("/api/gallery", params={"per_page": 101})
    assert response.status_code == 422 and "per_page" in response.json()["error"]
    response = client.get("/api/nothing-here")
    assert response.status_code == 404 and response.json()["error"] == "no page or API endpoint at /api/nothing-here"


def test_uploads_that_are_too_large_or_not_images(client: TestClient) -> None:
    big = b"\xff" * (UPLOAD_LIMIT + (200 << 10))
    response = client.post("/api/uploads", files={"file": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413 and "larger than the limit of 10 MB" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n\r\n"
        yield boundary
        for _ in range(12):
            yield b"\0" * (1 << 20)
        yield b"\r\n--xyz--\r\n"

    response = client.post("/api/uploads", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 413 and "larger than the limit" in response.json()["error"]

    just_over = b"\xff" * (UPLOAD_LIMIT + (10 << 10))  # within the form's overhead allowance, over the file limit
    response = client.post("/api/uploads", files={"file": ("just-over.jpg", just_over, "image/jpeg")})
    assert response.status_code == 413 and "just-over.jpg: larger than the limit of 10 MB" in response.json()["error"]

    response = client.post("/api/uploads", files={"file": ("notes.txt", b"just some text\n", "text/plain")})
    assert response.status_code == 415 and "not a usable image: not an image" in response.json()["error"]
    response = client.post("/api/uploads", files={"file": ("empty.jpg", b"", "image/jpeg")})
    assert response.status_code == 415 and "the file is empty" in response.json()["error"]
    truncated = image_bytes("truncated", (400, 300))[:2000]
    response = client.post("/api/uploads", files={"file": ("cut.jpg", truncated, "image/jpeg")})
    assert response.status_code == 415 and "not a usable image" in response.json()["error"]
    response = client.post("/api/uploads")
    assert response.status_code == 422 and "file" in response.json()["error"]


# -- pages -----------------------------------------------------------------------------------------------------
def test_start_page_shows_sets_models_and_the_first_gallery_page(client: TestClient, web: WebData) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    embedded, _ = web.vectors()
    tiles = re.findall(r'class="tile" href="/search\?([^"]+)" data-photo-id="([^"]+)"', page.text)
    assert [t[1] for t in tiles] == sorted(embedded)[:24]
    assert all("metric=cosine" in t[0] and "predicate=knn" in t[0] for t in tiles)
    assert f'<option value="{web.model}" data-text="yes" selected>' in page.text
    assert 'name="radius"' in page.text and 'max="2.0"' in page.text
    assert "src=\"http" not in page.text  # no remote image
    assert "/static/app.js" in page.text and client.get("/static/app.js").status_code == 200

    # A further condition typed next to the set menu: both must hold, and the page keeps it.
    downloads = downloads_by_photo(web)
    page = client.get("/", params=[("key_set", "all"), ("key_set", "min_downloads:100"), ("key_set", "")])
    assert page.status_code == 200 and 'id="key_set_more" class="more" maxlength="200" value="min_downloads:100"' in page.text
    tiles = re.findall(r'class="tile" href="/search\?([^"]+)" data-photo-id="([^"]+)"', page.text)
    assert sorted(t[1] for t in tiles) == sorted(i for i in embedded if downloads.get(i, 0) >= 100)[:24]
    assert all("key_set=min_downloads%3A100" in t[0] and "key_set=&" not in t[0] for t in tiles)
    assert client.get("/static/app.css").status_code == 200


def test_results_page_lists_the_api_results_and_escapes_text(client: TestClient, web: WebData) -> None:
    ids, _ = web.vectors()
    target = ids[1]
    api = client.get("/api/search", params={"photo_id": target, "k": 40, "metric": "l2"}).json()
    page = client.get("/search", params={"photo_id": target, "k": 40, "metric": "l2"})
    assert page.status_code == 200
    shown = re.findall(r'class="result" href="[^"]+" data-photo-id="([^"]+)"', page.text)
    assert shown == [r["photo_id"] for r in api["results"]]
    assert 'value="l2" checked' in page.text and 'id="update"' in page.text  # the settings stay editable
    assert XSS not in page.text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert "src=\"http" not in page.text
    key_page = client.get("/search", params={"photo_id": web.ids[4], "k": 3})
    assert XSS not in key_page.text and "&lt;script&gt;" in key_page.text  # the key's own description


def test_html_form_modes_and_upload_redirect(client: TestClient, web: WebData) -> None:
    page = client.get("/search", params={"mode": "text", "text": "lake", "photo_id": web.ids[0], "k": 4})
    assert page.status_code == 200 and "“lake”" in page.text and len(re.findall(r'class="result"', page.text)) == 4
    page = client.get("/search", params={"mode": "key", "photo_id": web.ids[0], "text": "ignored", "k": 2})
    assert page.status_code == 200 and f'name="photo_id" value="{web.ids[0]}"' in page.text
    page = client.get("/search", params={"mode": "text", "text": " "})
    assert page.status_code == 400 and "type a text to search for" in page.text
    assert "Traceback" not in page.text and page.headers["content-type"].startswith("text/html")

    data = image_bytes(web.ids[3], (120, 90))
    response = client.post("/upload", files={"file": ("x.jpg", data, "image/jpeg")},
                           data={"k": "3", "metric": "l2", "join_set": "all"}, follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/search?upload=") and "metric=l2" in location and "k=3" in location
    page = client.get(location)
    assert page.status_code == 200 and "uploaded image" in page.text
    assert len(re.findall(r'class="result"', page.text)) == 3
    response = client.post("/upload", files={"file": ("x.txt", b"hello", "text/plain")})
    assert response.status_code == 415 and "not a usable image" in response.text and "<html" in response.text.lower()


def test_bad_input_on_pages_is_an_html_message(client: TestClient) -> None:
    page = client.get("/search", params={"photo_id": "no-such-photo"})
    assert page.status_code == 404 and "photo id &#39;no-such-photo&#39; is not in the photos table" in page.text
    page = client.get("/", params={"k": "-3"})
    assert page.status_code == 422 and "k: Input should be greater than or equal to 1" in page.text
    page = client.get("/nowhere")
    assert page.status_code == 404 and "no page or API endpoint at /nowhere" in page.text


# -- the server process ----------------------------------------------------------------------------------------
def test_unexpected_errors_are_a_500_message_without_a_trace(client: TestClient, monkeypatch) -> None:
    backend: WebBackend = client.app.state.backend

    def broken() -> list:
        raise RuntimeError("disk on fire at /secret/path")

    monkeypatch.setattr(backend, "models", broken)
    response = client.get("/api/models")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (RuntimeError); the server log has the details", "status": 500}
    page = client.get("/")
    assert page.status_code == 500 and "/secret/path" not in page.text and "Traceback" not in page.text


def test_serve_refuses_a_database_in_use_and_workers_on_chdb(client: TestClient, web: WebData, capsys) -> None:
    # This process holds the database (the module's app): a second server fails at start-up, clearly.
    result = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--port", "0", "--data-dir", str(web.data_dir)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 75, result.stderr
    assert "is in use by another process" in result.stderr and "Traceback" not in result.stderr
    code = run_cli(capsys, "serve", "--workers", "2", "--data-dir", web.data_dir)
    assert code.code == 2 and "--workers > 1 needs a ClickHouse server" in code.err

