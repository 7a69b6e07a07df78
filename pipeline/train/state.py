"""Where trained encoders keep their state, and how a name becomes a loaded encoder.

`<data-dir>/models/<slug>/manifest.json` names the model, its kind (pca, autoencoder, triplet),
its output dimension and whatever the kind needs to rebuild itself; weights sit next to it. The
manifest is written last (atomically), so a model directory without one is an unfinished
training run and is treated as not trained.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..fsutil import atomic_write_json, read_json
from ..store import EmbeddingStore, model_slug

MANIFEST = "manifest.json"
RESERVED = {"pca": "pca", "autoencoder": "autoencoder"}  # names that can only mean a trained model
TRAIN_HINT = {
    "pca": "clipsql train pca",
    "autoencoder": "clipsql train autoencoder",
    "triplet": "clipsql train triplet --base MODEL --labels collections",
}


def models_root(data_dir: Path) -> Path:
    return Path(data_dir) / "models"


def model_dir(data_dir: Path, name: str) -> Path:
    return models_root(data_dir) / model_slug(name)


def read_manifest(data_dir: Path, name: str) -> dict[str, Any] | None:
    manifest = read_json(model_dir(data_dir, name) / MANIFEST)
    return manifest if isinstance(manifest, dict) and manifest.get("model") == name else None


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    manifest = {**manifest, "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(directory / MANIFEST, manifest)


def is_trained_name(name: str, data_dir: Path) -> bool:
    """True for names that refer to a trained encoder (whether or not it was trained yet)."""
    return name in RESERVED or name.startswith("triplet-") or read_manifest(data_dir, name) is not None


def staging_dir(data_dir: Path, name: str) -> Path:
    """A fresh directory to train into; the current state stays usable until `commit`."""
    directory = models_root(data_dir) / f".{model_slug(name)}.training-{os.getpid()}"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def commit(data_dir: Path, name: str, staging: Path) -> Path:
    """Make the trained state in `staging` the model's state. Its old vectors were made by the
    old state, so they go too; the training command writes the new ones right after."""
    directory = model_dir(data_dir, name)
    store = EmbeddingStore(Path(data_dir) / "embeddings", name)
    if store.dir.exists():
        shutil.rmtree(store.dir)
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return directory


def load_trained_encoder(name: str, data_dir: Path, device: str = "auto"):
    manifest = read_manifest(data_dir, name)
    if manifest is None:
        kind = RESERVED.get(name, "triplet" if name.startswith("triplet-") else "")
        hint = TRAIN_HINT.get(kind, "clipsql train")
        raise ModelError(
            f"model {name!r} has not been trained in {data_dir} yet (no {model_dir(data_dir, name) / MANIFEST}); "
            f"run `{hint}` first"
        )
    kind = manifest.get("kind")
    directory = model_dir(data_dir, name)
    if kind == "pca":
        from .pca import PcaEncoder

        return PcaEncoder(name, directory, manifest)
    if kind == "autoencoder":
        from .autoencoder import AutoencoderEncoder

        return AutoencoderEncoder(name, directory, manifest, device)
    if kind == "triplet":
        from .triplet import TripletEncoder

        return TripletEncoder(name, directory, manifest, data_dir, device)
    raise ModelError(f"{directory / MANIFEST}: unknown model kind {kind!r}")
