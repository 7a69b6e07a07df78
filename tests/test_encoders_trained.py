"""Trained encoders: `clipsql train pca`, `train autoencoder` and `train triplet`, then embed, load,
search and eval with them. PCA is checked against numpy's SVD, the triplet loss against a
brute-force loop, and learning against held-out photos the model never saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipeline.classic import pixel_array
from pipeline.config import Settings
from pipeline.store import EmbeddingStore
from pipeline.train.data import in_holdout, write_vectors
from pipeline.train.triplet import augment, triplet_loss
from tests.fixtures.labelled import SHAPE_CLASSES, shape_image, write_class_folders
from tests.helpers import database, run_cli


def stored(data: Path, model: str) -> tuple[list[str], np.ndarray, list[str]]:
    table = EmbeddingStore(data / "embeddings", model).read_all().sort_by("photo_id")
    return (table["photo_id"].to_pylist(), np.array(table["embedding"].to_pylist(), dtype=np.float64),
            table["image_url"].to_pylist())


def shapes(tmp_path: Path, capsys, per_class: int = 6, seed: int = 0) -> tuple[Path, Path]:
    images = tmp_path / "shapes"
    write_class_folders(images, per_class=per_class, seed=seed)
    data = tmp_path / "data"
    assert run_cli(capsys, "extract", "--source", f"folder:{images}", "--data-dir", data).code == 0
    return images, data


def raw_pixels(urls: list[str]) -> np.ndarray:
    rows = []
    for url in urls:
        with Image.open(url) as image:
            rows.append(pixel_array(image.convert("RGB")).astype(np.float64).ravel() / 255)
    return np.array(rows)


def test_pca_matches_svd_and_encodes_new_images(tmp_path: Path, capsys) -> None:
    images, data = shapes(tmp_path, capsys)
    before = run_cli(capsys, "embed", "--model", "pca", "--data-dir", data)
    assert before.code == 4 and "clipsql train pca" in before.err
    result = run_cli(capsys, "train", "pca", "--components", "8", "--data-dir", data)
    assert result.code == 0, result.err
    manifest = json.loads((data / "models" / "pca" / "manifest.json").read_text())
    assert manifest["kind"] == "pca" and manifest["dim"] == 8 and manifest["fitted_on"] == 24
    ids, vectors, urls = stored(data, "pca")
    assert len(ids) == 24 and vectors.shape == (24, 8)
    # independent: centre, SVD, project on the top 8 right singular vectors. Component signs are
    # arbitrary, so compare the Gram matrices, which do not depend on them.
    x = raw_pixels(urls)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    expected = (x - mean) @ vt[:8].T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors @ vectors.T, expected @ expected.T, atol=2e-4)

    # new photos: `embed --model pca` encodes only those, with the stored state
    rng = np.random.default_rng(9)
    new_files = []
    for i, label in enumerate(SHAPE_CLASSES):
        path = images / label / f"new_{i}.png"
        shape_image(label, rng).save(path)
        new_files.append(path)
    assert run_cli(capsys, "extract", "--source", f"folder:{images}", "--data-dir", data).code == 0
    embed = run_cli(capsys, "embed", "--model", "pca", "--data-dir", data)
    assert embed.code == 0 and "in 28, out 4, skipped 24" in embed.err
    ids2, vectors2, urls2 = stored(data, "pca")
    x2 = raw_pixels(urls2)
    expected2 = (x2 - mean) @ vt[:8].T
    expected2 /= np.linalg.norm(expected2, axis=1, keepdims=True)
    assert np.allclose(vectors2 @ vectors2.T, expected2 @ expected2.T, atol=2e-4)

    assert run_cli(capsys, "load", "--data-dir", data).code == 0
    found = run_cli(capsys, "search", "--image", new_files[0], "--model", "pca", "-k", "1", "--format", "json",
                    "--data-dir", data)
    assert found.code == 0, found.err
    assert Path(found.json()[0]["photo_image_url"]) == new_files[0].resolve()
    assert found.json()[0]["distance"] == pytest.approx(0, abs=1e-4)

    # training again replaces the state and every vector (a new dimension is fine)
    assert run_cli(capsys, "train", "pca", "--components", "4", "--data-dir", data).code == 0
    assert stored(data, "pca")[1].shape == (28, 4)
    assert run_cli(capsys, "load", "--data-dir", data).code == 0
    with database(data) as db:
        assert dict(db.query_rows("SELECT model, dim FROM models FINAL"))["pca"] == 4


def test_autoencoder_trains_and_its_latent_layer_embeds(tmp_path: Path, capsys) -> None:
    images, data = shapes(tmp_path, capsys, per_class=8)
    result = run_cli(capsys, "train", "autoencoder", "--latent", "16", "--epochs", "20", "--batch-size", "8", "--lr", "0.003",
                     "--data-dir", data)
    assert result.code == 0, result.err
    directory = data / "models" / "autoencoder"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["kind"] == "autoencoder" and manifest["dim"] == 16 and len(manifest["train_loss"]) == 20
    assert manifest["train_loss"][-1] < 0.75 * manifest["train_loss"][0]
    assert manifest["validation_loss"][-1] < manifest["validation_loss"][0]
    for name in ("loss.png", "reconstruction.png"):
        with Image.open(directory / name) as png:
            assert png.format == "PNG"
    ids, vectors, urls = stored(data, "autoencoder")
    assert vectors.shape == (32, 16)
    # the same latent from the saved weights, through a module built here
    from pipeline.train.autoencoder import build_autoencoder

    model = build_autoencoder(16)
    model.load_state_dict(torch.load(directory / "autoencoder.pt", weights_only=True))
    model.eval()
    batch = np.stack([np.asarray(Image.open(u).convert("RGB").resize((32, 32), Image.BILINEAR, reducing_gap=2.0))
                      for u in urls])
    with torch.no_grad():
        latent = model.encoder(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255).numpy()
    latent /= np.linalg.norm(latent, axis=1, keepdims=True)
    assert np.allclose(vectors, latent, atol=1e-4)
    rows = run_cli(capsys, "eval", "--model", "autoencoder", "--format", "json", "--data-dir", data).json()
    assert rows[0]["precision@5"] > 2 * rows[0]["chance"]
    new = images / "red-circle" / "late.png"
    shape_image("red-circle", np.random.default_rng(5)).save(new)
    assert run_cli(capsys, "extract", "--source", f"folder:{images}", "--data-dir", data).code == 0
    assert run_cli(capsys, "embed", "--model", "autoencoder", "--data-dir", data).code == 0
    assert stored(data, "autoencoder")[1].shape == (33, 16)


def brute_force_triplet(embeddings: np.ndarray, labels: list[int], mining: str, margin: float) -> float:
    losses = []
    for a in range(len(labels)):
        d = [float(np.linalg.norm(embeddings[a] - embeddings[j])) for j in range(len(labels))]
        positives = [d[j] for j in range(len(labels)) if j != a and labels[j] == labels[a]]
        negatives = [d[j] for j in range(len(labels)) if labels[j] != labels[a]]
        if positives and negatives:
            losses.append(max(0.0, max(positives) - min(negatives) + margin))
    return float(np.mean(losses))


def test_batch_hard_triplet_loss_matches_a_loop() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 1, 4]  # label 3 and 4 have no positive: not anchors
    same = torch.tensor([[a == b for b in labels] for a in labels])
    got = triplet_loss(torch.from_numpy(x), same, "batch-hard", 0.3)
    assert float(got) == pytest.approx(brute_force_triplet(x, labels, "batch-hard", 0.3), abs=1e-6)
    random_loss = triplet_loss(torch.from_numpy(x), same, "random", 0.3, torch.Generator().manual_seed(1))
    assert 0 <= float(random_loss) <= float(got) + 1e-9  # a random triplet is never harder than the hardest
    assert triplet_loss(torch.from_numpy(x[:2]), torch.ones(2, 2, dtype=torch.bool), "batch-hard", 0.3) is None


def test_triplet_keeps_the_epoch_with_the_lowest_validation_loss() -> None:
    from pipeline.train.triplet import apply_head, fit_head

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(6), 30)
    vectors = rng.normal(size=(len(labels), 24))
    vectors[np.arange(len(labels)), labels] += 1.5
    head, train, validation, kept = fit_head(vectors, [[str(c)] for c in labels], out_dim=8, hidden=32, epochs=25,
                                             p=6, k=5)
    assert len(train) == len(validation) == 25
    assert kept == int(np.argmin(validation)) + 1
    assert min(validation) < validation[-1]  # it did over-fit later, so stopping early mattered
    assert apply_head(head, vectors.astype(np.float32)).shape == (180, 8)


def test_triplet_head_learns_classes_it_can_generalise(tmp_path: Path, capsys) -> None:
    """A base whose vectors are dominated by a nuisance (one of 4 groups that ignore the class, like a
    background) over a weaker class signal: the head trained on half the photos must learn to
    ignore the nuisance and retrieve the other half's classes far better than the base does."""
    _, data = shapes(tmp_path, capsys, per_class=20, seed=3)
    photos = pq.read_table(data / "parquet" / "photos.parquet")
    collections = pq.read_table(data / "parquet" / "collections.parquet").to_pandas()
    label_of = dict(zip(collections["photo_id"], collections["collection_id"], strict=True))
    names = sorted(set(label_of.values()))
    rng = np.random.default_rng(0)
    ids = photos["photo_id"].to_pylist()
    base = rng.normal(scale=0.3, size=(len(ids), 16))
    for row, photo_id in enumerate(ids):
        base[row, names.index(label_of[photo_id])] += 1.0
        base[row, 4 + rng.integers(0, 4)] += 2.0
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    write_vectors(EmbeddingStore(data / "embeddings", "synthetic"), ids, photos["photo_image_url"].to_pylist(),
                  ["0" * 64] * len(ids), base, "synthetic")
    result = run_cli(capsys, "train", "triplet", "--base", "synthetic", "--holdout", "0.5", "--epochs", "30",
                     "--dim", "16", "--hidden", "64", "--classes-per-batch", "4", "--data-dir", data)
    assert result.code == 0, result.err
    directory = data / "models" / "triplet_synthetic"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert (manifest["base"], manifest["mining"], manifest["labels"]) == ("synthetic", "batch-hard", "collections")
    held = in_holdout(ids, 0.5)
    assert manifest["trained_on"] == int((~held).sum())
    assert manifest["train_loss"][-1] < 0.5 * manifest["train_loss"][0]
    assert manifest["validation_loss"] == [] and manifest["kept_epoch"] == 30  # too few photos to validate on
    with Image.open(directory / "loss.png") as png:
        assert png.format == "PNG"
    rows = {r["model"]: r for r in run_cli(capsys, "eval", "--holdout", "0.5", "--format", "json", "--data-dir",
                                           data).json()}
    assert rows["triplet-synthetic"]["queries"] == int(held.sum())
    assert rows["triplet-synthetic"]["precision@5"] > rows["synthetic"]["precision@5"] + 0.2
    assert rows["triplet-synthetic"]["mAP"] > rows["synthetic"]["mAP"] + 0.2
    # the head applied to the stored base vectors, by hand
    got_ids, got, _ = stored(data, "triplet-synthetic")
    state = torch.load(directory / "head.pt", weights_only=True)
    x = torch.from_numpy(base[[ids.index(p) for p in got_ids]]).float()
    hidden = torch.relu(x @ state["0.weight"].T + state["0.bias"])
    out = (hidden @ state["2.weight"].T + state["2.bias"]).numpy()
    assert np.allclose(got, out / np.linalg.norm(out, axis=1, keepdims=True), atol=1e-5)
    random = run_cli(capsys, "train", "triplet", "--base", "synthetic", "--mining", "random", "--name", "rand",
                     "--epochs", "5", "--data-dir", data)
    assert random.code == 0 and json.loads((data / "models" / "rand" / "manifest.json").read_text())["mining"] == "random"


def test_triplet_on_a_real_base_searches_by_image(tmp_path: Path, capsys) -> None:
    images, data = shapes(tmp_path, capsys, per_class=5)
    missing = run_cli(capsys, "train", "triplet", "--base", "pixels", "--data-dir", data)
    assert missing.code == 1 and "clipsql embed --model pixels" in missing.err
    assert run_cli(capsys, "embed", "--model", "pixels", "--data-dir", data).code == 0
    assert run_cli(capsys, "train", "triplet", "--base", "pixels", "--epochs", "5", "--data-dir", data).code == 0
    assert run_cli(capsys, "load", "--data-dir", data).code == 0
    query = images / "green-triangle" / "green_triangle_02.png"
    found = run_cli(capsys, "search", "--image", query, "--model", "triplet-pixels", "-k", "2", "--format", "json",
                    "--data-dir", data)
    assert found.code == 0, found.err
    assert Path(found.json()[0]["photo_image_url"]) == query.resolve()
    assert found.json()[0]["distance"] == pytest.approx(0, abs=1e-4)  # base + head on the file = stored vector
    by_id = run_cli(capsys, "search", f"--photo-id={found.json()[1]['photo_id']}", "--model", "triplet-pixels",
                    "--format", "json", "--data-dir", data)
    assert by_id.code == 0 and len(by_id.json()) == 10
    keywords = run_cli(capsys, "train", "triplet", "--base", "pixels", "--labels", "keywords", "--name", "kw",
                       "--epochs", "3", "--data-dir", data)
    assert keywords.code == 0, keywords.err
    manifest = json.loads((data / "models" / "kw" / "manifest.json").read_text())
    assert manifest["labels"] == "keywords" and manifest["trained_on"] == 20


def test_triplet_near_duplicate_mode(tmp_path: Path, capsys) -> None:
    _, data = shapes(tmp_path, capsys, per_class=4)
    assert run_cli(capsys, "embed", "--model", "color-histogram", "--data-dir", data).code == 0
    result = run_cli(capsys, "train", "triplet", "--base", "color-histogram", "--labels", "augment", "--views", "3",
                     "--epochs", "15", "--dim", "32", "--classes-per-batch", "8", "--data-dir", data)
    assert result.code == 0, result.err
    manifest = json.loads((data / "models" / "triplet_color_histogram" / "manifest.json").read_text())
    assert manifest["labels"] == "augment" and manifest["views"] == 3 and manifest["trained_on"] == 16
    assert manifest["train_loss"][-1] < manifest["train_loss"][0]
    assert stored(data, "triplet-color-histogram")[1].shape == (16, 32)


def test_augment_makes_near_duplicates() -> None:
    image = shape_image("blue-square", np.random.default_rng(1), 64)
    copies = [augment(image, np.random.default_rng(s)) for s in range(4)]
    assert all(c.mode == "RGB" and 38 <= c.width <= 64 for c in copies)
    assert len({c.tobytes() for c in copies}) == 4  # different edits
    from pipeline.phash import hamming, phash64

    others = [shape_image(label, np.random.default_rng(7), 64) for label in SHAPE_CLASSES if label != "blue-square"]
    to_copies = np.mean([hamming(phash64(image), phash64(c)) for c in copies])
    to_others = np.mean([hamming(phash64(image), phash64(o)) for o in others])
    assert to_copies < to_others - 5  # still much more like the original than other images are


def test_trained_state_is_needed_where_it_is_used(tmp_path: Path) -> None:
    from pipeline.encoders import load_encoder
    from pipeline.errors import ModelError

    settings = Settings(data_dir=tmp_path)
    (tmp_path / "models" / "pca").mkdir(parents=True)
    (tmp_path / "models" / "pca" / "manifest.json").write_text(json.dumps({"model": "pca", "kind": "pca", "size": 32,
                                                                           "dim": 4}))
    with pytest.raises(ModelError, match="train pca"):
        load_encoder("pca", data_dir=settings.data_dir)  # manifest without its pca.npz
