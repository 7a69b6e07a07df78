"""`clipsql train pca`: principal components of the photos' pixel vectors (system 2's PCA).

The covariance of the 32x32x3 pixel vectors is accumulated in batches (float64), then its top
eigenvectors are the components; a vector is the image's centred pixels projected on them,
L2-normalised. Storing only the mean and the components (a few MB) is what lets a later
`embed` or `search --image` encode new images exactly the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..classic import PIXEL_SIZE, pixel_array
from ..config import Settings
from ..encoders import Encoder, normalise
from ..errors import ModelError, UsageError
from ..report import StageReport
from ..store import EmbeddingStore
from .data import in_holdout, load_images, read_photos, sample_rows, write_vectors
from .state import commit, staging_dir, write_manifest

KIND = "pca"


def fit_pca(pixels: np.ndarray, components: int, batch: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mean (d,), components (k, d) with unit rows, explained variance (k,) of the rows of `pixels`.

    With more images than dimensions the d x d covariance is accumulated in batches and
    diagonalised; with fewer, the n x n Gram matrix of the centred images is (same components,
    a much smaller eigenproblem)."""
    n, d = pixels.shape
    if n < 2:
        raise UsageError(f"PCA needs at least 2 images, got {n}")
    mean = np.zeros(d, np.float64)
    for start in range(0, n, batch):
        mean += pixels[start:start + batch].astype(np.float64).sum(axis=0)
    mean /= n
    mean32 = mean.astype(np.float32)
    k = min(components, d, n - 1)
    if n <= d:
        centred = pixels.astype(np.float64) - mean
        values, vectors = np.linalg.eigh(centred @ centred.T)
        order = np.argsort(values)[::-1][:k]
        values, vectors = values[order], vectors[:, order]
        basis = (centred.T @ vectors / np.sqrt(np.maximum(values, 1e-300))).T
        values = values / (n - 1)
    else:
        covariance = np.zeros((d, d), np.float64)
        for start in range(0, n, batch):
            centred = pixels[start:start + batch].astype(np.float32) - mean32
            covariance += (centred.T @ centred).astype(np.float64)
        covariance /= n - 1
        values, vectors = np.linalg.eigh(covariance)
        order = np.argsort(values)[::-1][:k]
        values, basis = values[order], vectors[:, order].T
    signs = np.sign(basis[np.arange(k), np.abs(basis).argmax(axis=1)])  # a fixed sign per component
    basis = basis * signs[:, None]
    return mean32, basis.astype(np.float32), values.astype(np.float32)


class PcaEncoder(Encoder):
    kind = KIND

    def __init__(self, name: str, directory: Path, manifest: dict[str, Any]) -> None:
        self.name = name
        self.size = int(manifest["size"])
        self.input_size = self.size
        try:
            with np.load(directory / "pca.npz") as state:
                self.mean, self.components = state["mean"], state["components"]
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{directory / 'pca.npz'} is unreadable ({exc}); run `clipsql train pca` again") from None
        self.dim = int(self.components.shape[0])

    def prepare(self, image: Image.Image) -> np.ndarray:
        return (pixel_array(image, self.size).astype(np.float32) / 255.0).ravel()

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        centred = np.asarray(batch, np.float32).reshape(len(batch), -1) - self.mean
        return normalise(centred @ self.components.T)


def train_pca(settings: Settings, name: str = KIND, components: int = 64, size: int = PIXEL_SIZE,
              max_images: int | None = None, holdout: float = 0.0, seed: int = 0) -> StageReport:
    """Fit on the loaded images (less the held-out ones, at most `max_images` of them) and write
    the vectors of every image that was read."""
    report = StageReport("train-pca")
    photos = read_photos(settings)
    loaded = load_images(settings, photos, lambda image: pixel_array(image, size), target=size, desc="pca images")
    flat = loaded.arrays.reshape(len(loaded.arrays), -1)
    train = np.flatnonzero(~in_holdout(loaded.photo_ids, holdout))
    train = train[sample_rows(len(train), max_images, seed)]
    mean, basis, variance = fit_pca((flat[train].astype(np.float32) / 255.0), components)
    staging = staging_dir(settings.data_dir, name)
    np.savez(staging / "pca.npz", mean=mean, components=basis, explained_variance=variance)
    total_variance = float(np.var(flat[train].astype(np.float32) / 255.0, axis=0, ddof=1).sum())
    write_manifest(staging, {
        "model": name, "kind": KIND, "dim": int(basis.shape[0]), "size": size, "fitted_on": int(len(train)),
        "holdout": holdout, "explained_variance_ratio": round(float(variance.sum()) / max(total_variance, 1e-12), 4),
    })
    directory = commit(settings.data_dir, name, staging)
    encoder = PcaEncoder(name, directory, {"size": size})
    vectors = np.concatenate([encoder.encode_images(flat[s:s + 4096].astype(np.float32) / 255.0)
                              for s in range(0, len(flat), 4096)])
    store = EmbeddingStore(settings.paths().embeddings, name)
    written = write_vectors(store, loaded.photo_ids, loaded.urls, loaded.sha256, vectors, KIND)
    report.rows_in = photos.num_rows
    report.rows_out = written
    report.rejected = sum(loaded.failures.values())
    report.rejects_by_reason.update(loaded.failures)
    report.details = {"model": name, "components": int(basis.shape[0]), "fitted_on": int(len(train)),
                      "explained_variance_ratio": round(float(variance.sum()) / max(total_variance, 1e-12), 4),
                      "state": str(directory)}
    report.notes.append(f"PCA state in {directory}; vectors of {written} photos written as model {name!r}")
    return report.finish()
