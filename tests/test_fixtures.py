"""Tests of the test fixtures themselves: if these drift from what they promise (exact slices,
real truncation, the documented failure sequences, round-tripping TSVs), pipeline tests built on
them would pass or fail for the wrong reasons."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import re
import threading
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
import requests
from PIL import Image

from tests.fixtures.server import FixtureServer
from tests.fixtures.tiny_clip import TINY_CLIP_DIM, build_tiny_clip
from tests.fixtures.unsplash import (
    HOSTILE_STRING,
    SPECIAL_DESCRIPTIONS,
    SPECIAL_KEYWORDS,
    TABLE_COLUMNS,
    UNSPLASH_ZIP_NAME,
    UnsplashZip,
    image_bytes,
    make_dataset,
    write_tsv_dir,
    write_zip,
)

PAYLOAD = bytes(range(256)) * 40  # 10 240 bytes, every offset distinguishable mod 256


def _read_tsv(data: bytes | Path) -> pd.DataFrame:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    return pd.read_csv(source, sep="\t", dtype=str, keep_default_na=False)


def _assert_same_table(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual.columns) == list(expected.columns)
    assert actual.to_numpy().tolist() == expected.to_numpy().tolist()


# -- dataset ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return make_dataset(40)


def test_dataset_has_the_unsplash_lite_columns_and_only_strings(tables: dict[str, pd.DataFrame]) -> None:
    assert list(tables) == list(TABLE_COLUMNS)
    for name, frame in tables.items():
        assert list(frame.columns) == TABLE_COLUMNS[name], name
        assert len(frame) > 0, name
        assert all(isinstance(v, str) for v in frame.to_numpy().ravel()), f"{name} has non-string values"


def test_dataset_is_deterministic_per_seed() -> None:
    first, again, other = make_dataset(12, seed=3), make_dataset(12, seed=3), make_dataset(12, seed=4)
    for name in TABLE_COLUMNS:
        _assert_same_table(again[name], first[name])
    assert first["photos"]["photo_id"].tolist() != other["photos"]["photo_id"].tolist()


def test_dataset_contents_cover_the_awkward_cases(tables: dict[str, pd.DataFrame]) -> None:
    photos, keywords, conversions = tables["photos"], tables["keywords"], tables["conversions"]
    ids = photos["photo_id"].tolist()
    assert len(set(ids)) == 40
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{11}", i) for i in ids)
    assert ids[0].startswith("-") and "_" in ids[1]
    assert (photos["photo_image_url"] == "http://127.0.0.1:0/img/" + photos["photo_id"] + ".jpg").all()

    assert photos["photo_description"].tolist()[: len(SPECIAL_DESCRIPTIONS)] == SPECIAL_DESCRIPTIONS
    assert set(SPECIAL_KEYWORDS) <= set(keywords["keyword"])
    text = "\n".join(photos["photo_description"]) + "\n".join(keywords["keyword"])
    for needle in ['"', "'", "é", "東京", "🐱", HOSTILE_STRING]:
        assert needle in text, needle

    per_photo = keywords.groupby("photo_id").size()
    assert set(per_photo.index) == set(ids) and per_photo.between(2, 6).all()
    assert not keywords.duplicated(["photo_id", "keyword"]).any()
    for name in ("keywords", "collections", "conversions", "colors"):
        assert set(tables[name]["photo_id"]) <= set(ids), name

    without_conversions = set(ids) - set(conversions["photo_id"])
    assert 2 <= len(without_conversions) <= 6
    downloads = photos["stats_downloads"].astype(int)
    assert downloads.max() > 20 * downloads.median()  # heavy head, long tail

    stamps = pd.concat([photos["photo_submitted_at"], conversions["converted_at"]])
    assert stamps.str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").any()
    assert stamps.str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}").any()
    assert stamps.str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?").all()
    assert set(photos["photo_featured"]) == {"t", "f"} and set(keywords["suggested_by_user"]) == {"t", "f"}
    for column in ("exif_iso", "photo_location_latitude", "ai_primary_landmark_confidence"):
        assert (photos[column] == "").any() and (photos[column] != "").any(), column
    assert (keywords["ai_service_2_confidence"] == "").any()


def test_tsv_dir_round_trips_through_pandas(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    paths = write_tsv_dir(tables, tmp_path, split_conversions=3)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        ["photos.tsv000", "keywords.tsv000", "collections.tsv000", "colors.tsv000"]
        + ["conversions.tsv000", "conversions.tsv001", "conversions.tsv002"]
    )
    for name in ("photos", "keywords", "collections", "colors"):
        _assert_same_table(_read_tsv(tmp_path / f"{name}.tsv000"), tables[name])
    parts = [tmp_path / f"conversions.tsv{k:03d}" for k in range(3)]
    for part in parts:
        assert part.read_text(encoding="utf-8").split("\n", 1)[0] == "\t".join(TABLE_COLUMNS["conversions"])
    joined = pd.concat([_read_tsv(p) for p in parts], ignore_index=True)
    assert all(len(_read_tsv(p)) > 0 for p in parts)
    _assert_same_table(joined, tables["conversions"])

    raw = (tmp_path / "photos.tsv000").read_text(encoding="utf-8")
    assert '"A ""quoted"" word, and a ""second"" one"' in raw  # CSV-style doubled quotes
    assert HOSTILE_STRING in raw and "東京タワー" in raw


def test_zip_is_reproducible_and_holds_the_release_files(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    first = write_zip(tables, tmp_path / "a.zip")
    second = write_zip(tables, tmp_path / "b.zip")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        names = set(archive.namelist())
        assert names == {
            "DOCS.md", "photos.tsv000", "keywords.tsv000", "collections.tsv000", "colors.tsv000",
            "conversions.tsv000", "conversions.tsv001",
        }  # fmt: skip
        _assert_same_table(_read_tsv(archive.read("keywords.tsv000")), tables["keywords"])
        conversions = pd.concat([_read_tsv(archive.read(f"conversions.tsv00{k}")) for k in range(2)])
        _assert_same_table(conversions, tables["conversions"])


def test_image_bytes_are_deterministic_distinct_jpegs() -> None:
    a, b = image_bytes("-AbCdEfGhIj"), image_bytes("zyxwvutsrq_")
    assert a == image_bytes("-AbCdEfGhIj") and a != b
    with Image.open(io.BytesIO(a)) as image:
        assert image.format == "JPEG" and image.size == (64, 48) and image.mode == "RGB"
    with Image.open(io.BytesIO(image_bytes("x", size=(20, 30)))) as image:
        assert image.size == (20, 30)


# -- server -----------------------------------------------------------------------------------------


def test_range_request_returns_the_slice(fixture_server: FixtureServer) -> None:
    url = fixture_server.add_file("range.zip", PAYLOAD)
    response = requests.get(url, headers={"Range": "bytes=1234-"}, timeout=5)
    assert response.status_code == 206
    assert response.content == PAYLOAD[1234:]
    assert response.headers["Content-Length"] == str(len(PAYLOAD) - 1234)
    assert response.headers["Content-Range"] == f"bytes 1234-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
    assert fixture_server.range_requests == ["bytes=1234-"]

    closed = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert closed.status_code == 206 and closed.content == PAYLOAD[10:20]
    beyond = requests.get(url, headers={"Range": f"bytes={len(PAYLOAD)}-"}, timeout=5)
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(PAYLOAD)}"

    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(PAYLOAD)) and head.headers["Accept-Ranges"] == "bytes"


def test_validators_give_304_and_if_range_falls_back_to_200(fixture_server: FixtureServer) -> None:
    url = fixture_server.add_file("cond.zip", PAYLOAD)
    etag = requests.head(url, timeout=5).headers["ETag"]
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=5).status_code == 304
    stale = requests.get(url, headers={"Range": "bytes=100-", "If-Range": '"other"'}, timeout=5)
    assert stale.status_code == 200 and stale.content == PAYLOAD
    fresh = requests.get(url, headers={"Range": "bytes=100-", "If-Range": etag}, timeout=5)
    assert fresh.status_code == 206 and fresh.content == PAYLOAD[100:]
    fixture_server.add_file("cond.zip", PAYLOAD[::-1])
    assert requests.head(url, timeout=5).headers["ETag"] != etag


def test_truncate_next_cuts_the_body_once(fixture_server: FixtureServer) -> None:
    url = fixture_server.add_file("cut.zip", PAYLOAD)
    fixture_server.truncate_next("cut.zip", 3000)
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") == str(len(PAYLOAD))
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        assert cut.value.partial == PAYLOAD[:3000]
    finally:
        connection.close()

    resumed = requests.get(url, headers={"Range": "bytes=3000-"}, timeout=5)
    assert resumed.status_code == 206 and PAYLOAD[:3000] + resumed.content == PAYLOAD
    assert requests.get(url, timeout=5).content == PAYLOAD  # only the next request was cut


def test_truncation_surfaces_as_a_requests_error(fixture_server: FixtureServer) -> None:
    url = fixture_server.add_file("cut2.zip", PAYLOAD)
    fixture_server.truncate_next("cut2.zip", 100)
    received = bytearray()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # noqa: SIM117 - the error comes mid-iteration
        with requests.get(url, stream=True, timeout=5) as response:
            for block in response.iter_content(10):
                received += block
    assert bytes(received) == PAYLOAD[:100]


def test_fail_next_then_recovers(fixture_server: FixtureServer) -> None:
    url = fixture_server.add_file("fail.zip", PAYLOAD)
    fixture_server.fail_next("fail.zip", 503, times=2)
    assert [requests.get(url, timeout=5).status_code for _ in range(3)] == [503, 503, 200]
    assert requests.get(fixture_server.data_url("missing.zip"), timeout=5).status_code == 404


def test_images_by_default_and_query_strings_are_recorded(fixture_server: FixtureServer) -> None:
    response = requests.get(fixture_server.image_url("abcDEF12_-x") + "?q=75&fm=jpg&w=200&fit=max", timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    assert response.content == image_bytes("abcDEF12_-x")
    assert fixture_server.requests == {"/img/abcDEF12_-x.jpg": 1}
    assert fixture_server.queries == [("/img/abcDEF12_-x.jpg", "q=75&fm=jpg&w=200&fit=max")]
    assert requests.get(f"{fixture_server.url}/elsewhere", timeout=5).status_code == 404


def test_flaky_image_gives_503_503_200(fixture_server: FixtureServer) -> None:
    fixture_server.set_image("flakyphoto1", "flaky")
    url = fixture_server.image_url("flakyphoto1")
    statuses = [requests.get(url, timeout=5).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    assert fixture_server.requests["/img/flakyphoto1.jpg"] == 4


def test_redirect_loop_loops(fixture_server: FixtureServer) -> None:
    fixture_server.set_image("loopphoto01", "redirect_loop")
    url = fixture_server.image_url("loopphoto01") + "?w=200"
    first = requests.get(url, allow_redirects=False, timeout=5)
    assert first.status_code == 302 and first.headers["Location"] == "/img/loopphoto01.jpg?w=200"
    with requests.Session() as session, pytest.raises(requests.TooManyRedirects):
        session.max_redirects = 5
        session.get(url, timeout=5)
    assert fixture_server.requests["/img/loopphoto01.jpg"] == 1 + 6


@pytest.mark.parametrize(
    ("mode", "status", "content_type"),
    [("404", 404, None), ("500", 500, None), ("corrupt", 200, "image/jpeg"), ("html", 200, "text/html"),
     ("truncated", 200, "image/jpeg")],
)  # fmt: skip
def test_bad_image_modes(
    fixture_server: FixtureServer, mode: str, status: int, content_type: str | None
) -> None:
    fixture_server.set_image("badphoto001", mode)
    response = requests.get(fixture_server.image_url("badphoto001"), timeout=5)
    assert response.status_code == status
    if content_type:
        assert response.headers["Content-Type"].startswith(content_type)
    if status == 200:
        with pytest.raises(OSError):  # noqa: SIM117 - Image.open may pass and only load() fail
            with Image.open(io.BytesIO(response.content)) as image:
                image.load()
    if mode == "truncated":
        assert response.content == image_bytes("badphoto001")[: len(image_bytes("badphoto001")) // 2]


def test_set_image_bytes_and_modes_are_validated(fixture_server: FixtureServer) -> None:
    fixture_server.set_image_bytes("custom00001", b"\x89PNG-ish", content_type="image/png")
    response = requests.get(fixture_server.image_url("custom00001"), timeout=5)
    assert response.content == b"\x89PNG-ish" and response.headers["Content-Type"] == "image/png"
    fixture_server.set_image("custom00001", "ok")
    assert requests.get(fixture_server.image_url("custom00001"), timeout=5).content == image_bytes(
        "custom00001"
    )
    with pytest.raises(ValueError, match="unknown image mode"):
        fixture_server.set_image("custom00001", "teapot")


def test_slow_answers_late_and_hang_times_out(fixture_server: FixtureServer) -> None:
    fixture_server.set_image("slowphoto01", "slow")
    fixture_server.set_image("hangphoto01", "hang")
    started = time.monotonic()
    assert requests.get(fixture_server.image_url("slowphoto01"), timeout=5).status_code == 200
    assert time.monotonic() - started >= 1.4
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(fixture_server.image_url("hangphoto01"), timeout=0.3)


def test_concurrent_requests_are_all_counted(fixture_server: FixtureServer) -> None:
    ids = [f"concurrent{k}" for k in range(8)]

    def fetch(photo_id: str) -> None:
        with requests.Session() as session:
            for _ in range(5):
                assert session.get(fixture_server.image_url(photo_id), timeout=5).status_code == 200

    threads = [threading.Thread(target=fetch, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(fixture_server.requests.values()) == 40
    assert all(fixture_server.requests[f"/img/{i}.jpg"] == 5 for i in ids)


def test_shutdown_does_not_wait_for_a_hanging_request() -> None:
    server = FixtureServer()
    server.set_image("hangphoto02", "hang")

    def hang() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.get(server.image_url("hangphoto02"), timeout=10)

    client = threading.Thread(target=hang, daemon=True)
    client.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.requests["/img/hangphoto02.jpg"] == 1
    started = time.monotonic()
    server.shutdown()
    assert time.monotonic() - started < 2
    client.join(timeout=2)
    assert not client.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(server.image_url("x"), timeout=1)


def test_unsplash_zip_fixture(unsplash_zip: UnsplashZip, fixture_server: FixtureServer) -> None:
    assert not fixture_server.requests  # reset between tests
    assert unsplash_zip.url == f"{fixture_server.url}/data/{UNSPLASH_ZIP_NAME}"
    assert requests.get(unsplash_zip.url, timeout=5).content == unsplash_zip.path.read_bytes()
    photos = unsplash_zip.tables["photos"]
    assert len(photos) == 40
    first_url = photos["photo_image_url"].iloc[0]
    assert first_url.startswith(fixture_server.image_base_url + "/")
    image = requests.get(first_url, timeout=5)
    assert image.content == image_bytes(photos["photo_id"].iloc[0])


# -- tiny CLIP --------------------------------------------------------------------------------------


def test_tiny_clip_loads_and_embeds(tiny_clip_dir: Path) -> None:
    import torch
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(tiny_clip_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_clip_dir)
    text_config = model.config.text_config
    assert (
        max(text_config.bos_token_id, text_config.eos_token_id, text_config.pad_token_id)
        < text_config.vocab_size
    )

    images = [Image.open(io.BytesIO(image_bytes(i))) for i in ("photo-one-1", "photo-two-2", "photo-one-1")]
    with torch.no_grad():
        image_features = model.get_image_features(
            **processor(images=images, return_tensors="pt")
        ).pooler_output
        texts = ["a mountain", HOSTILE_STRING, "東京 🌸 café", "word " * 200]
        tokens = processor(text=texts, return_tensors="pt", padding=True, truncation=True)
        text_features = model.get_text_features(**tokens).pooler_output
    assert image_features.shape == (3, TINY_CLIP_DIM)
    assert text_features.shape == (4, TINY_CLIP_DIM)
    assert tokens["input_ids"].shape[1] <= 77
    assert torch.equal(image_features[0], image_features[2])
    assert not torch.allclose(image_features[0], image_features[1])
    assert torch.isfinite(text_features).all()


def test_tiny_clip_is_deterministic(tiny_clip_dir: Path, tmp_path: Path) -> None:
    rebuilt = build_tiny_clip(tmp_path / "again")
    digest = [
        hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest() for d in (tiny_clip_dir, rebuilt)
    ]
    assert digest[0] == digest[1]
