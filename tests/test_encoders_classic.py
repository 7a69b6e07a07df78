"""The weight-free encoders (color-histogram, pixels, phash) and the registry: each vector equals an
independent numpy computation, and the models live side by side through embed, load and search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.encoders import BUILTIN_ENCODERS, EFFICIENTNET, load_encoder
from pipeline.errors import ModelError
from pipeline.phash import hamming, phash64
from tests.fixtures.labelled import write_class_folders
from tests.helpers import database, run_cli


def _noise(seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_color_histogram_is_three_32_bin_histograms() -> None:
    encoder = load_encoder("color-histogram")
    assert (encoder.kind, encoder.dim, encoder.supports_text) == ("color-histogram", 96, False)
    image = _noise(1)
    pixels = np.asarray(image).reshape(-1, 3)
    expected = np.concatenate([np.histogram(pixels[:, c], bins=32, range=(0, 256))[0] for c in range(3)])
    expected = expected / np.linalg.norm(expected)
    assert np.allclose(encoder.embed([image])[0], expected, atol=1e-6)
    # the fractions do not depend on the image size, only on the colours
    flat = Image.new("RGB", (300, 200), (255, 8, 130))
    vector = encoder.embed([flat])[0]
    assert np.flatnonzero(vector).tolist() == [31, 32 + 1, 64 + 16]
    assert np.allclose(vector[vector > 0], 1 / np.sqrt(3))


def test_pixels_are_the_image_in_0_1() -> None:
    encoder = load_encoder("pixels")
    assert (encoder.kind, encoder.dim) == ("pixels", 32 * 32 * 3)
    image = _noise(2, (32, 32))  # already 32x32: no resampling involved
    expected = np.asarray(image, np.float64).ravel() / 255
    assert np.allclose(encoder.embed([image])[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert encoder.embed([_noise(3, (97, 41))]).shape == (1, 3072)


def test_phash_cosine_distance_is_hamming_distance_over_32() -> None:
    encoder = load_encoder("phash")
    assert (encoder.kind, encoder.dim) == ("phash", 64)
    images = [_noise(s, (64, 48)) for s in range(6)]
    images.append(images[0].resize((50, 37)))  # a near-duplicate
    vectors = encoder.embed(images)
    assert np.allclose(np.abs(vectors), 1 / 8)
    hashes = [phash64(image) for image in images]
    for i in range(len(images)):
        for j in range(len(images)):
            cosine_distance = 1 - float(vectors[i] @ vectors[j])
            assert cosine_distance * 32 == pytest.approx(hamming(hashes[i], hashes[j]), abs=1e-4)
    assert hamming(hashes[0], hashes[6]) < 10 < hamming(hashes[0], hashes[1])


def test_registry_names_and_errors(tmp_path: Path) -> None:
    assert {"color-histogram", "pixels", "phash", EFFICIENTNET} <= set(BUILTIN_ENCODERS)
    for name, hint in (("pca", "clipsql train pca"), ("autoencoder", "clipsql train autoencoder"),
                       ("triplet-efficientnet-lite0", "clipsql train triplet")):
        with pytest.raises(ModelError, match=hint):
            load_encoder(name, data_dir=tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        load_encoder("./no/such/model", data_dir=tmp_path)


def test_models_side_by_side_embed_load_search(tmp_path: Path, capsys) -> None:
    images = tmp_path / "shapes"
    written = write_class_folders(images, per_class=4, seed=2)
    data = tmp_path / "data"
    assert run_cli(capsys, "extract", "--source", f"folder:{images}", "--data-dir", data).code == 0
    assert run_cli(capsys, "embed", "--model", "phash", "--data-dir", data).code == 0
    phash_part = sorted((data / "embeddings" / "phash").glob("part-*.parquet"))
    before = {p.name: p.read_bytes() for p in phash_part}
    assert run_cli(capsys, "embed", "--model", "color-histogram", "--data-dir", data).code == 0
    assert {p.name: p.read_bytes() for p in (data / "embeddings" / "phash").glob("part-*.parquet")} == before
    stored = pq.read_table(sorted((data / "embeddings" / "color_histogram").glob("part-*.parquet"))).to_pandas()
    encoder = load_encoder("color-histogram")
    for row in stored.itertuples():
        with Image.open(row.image_url) as image:
            assert np.allclose(row.embedding, encoder.embed([image.convert("RGB")])[0], atol=1e-6)
    assert len(stored) == len(written)

    assert run_cli(capsys, "load", "--data-dir", data).code == 0
    with database(data) as db:
        models = dict(db.query_rows("SELECT model, dim FROM models FINAL"))
        assert models == {"phash": 64, "color-histogram": 96}
    target = stored["photo_id"][0]
    for model in ("phash", "color-histogram"):
        result = run_cli(capsys, "search", f"--photo-id={target}", "--model", model, "-k", "3", "--exact",
                         "--format", "json", "--data-dir", data)
        assert result.code == 0, result.err
        rows = result.json()
        vectors = pq.read_table(sorted((data / "embeddings" / model.replace("-", "_")).glob("part-*.parquet")))
        ids = vectors["photo_id"].to_pylist()
        matrix = np.array(vectors["embedding"].to_pylist())
        query = matrix[ids.index(target)]
        distances = 1 - matrix @ query
        expected = sorted((d, i) for i, d in zip(ids, distances, strict=True) if i != target)[:3]
        assert [r["distance"] for r in rows] == pytest.approx([d for d, _ in expected], abs=1e-5)
    query_image = next(iter(written))
    by_image = run_cli(capsys, "search", "--image", query_image, "--model", "color-histogram", "-k", "1",
                       "--format", "json", "--data-dir", data)
    assert by_image.code == 0, by_image.err
    assert Path(by_image.json()[0]["photo_image_url"]) == query_image.resolve()
    assert by_image.json()[0]["distance"] == pytest.approx(0, abs=1e-5)
    text = run_cli(capsys, "search", "--text", "red", "--model", "phash", "--data-dir", data)
    assert text.code == 4 and "images only" in text.err
