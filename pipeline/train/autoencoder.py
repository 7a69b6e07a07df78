"""`clipsql train autoencoder`: a small convolutional autoencoder trained on the loaded images;
its bottleneck is the image vector (system 2).

32x32 RGB in, three stride-2 convolutions down to 4x4x128, a linear layer to the latent vector,
and the mirror image back up to 32x32; mean squared error on the pixels. A held-out tenth of the
images gives the validation curve, so the loss-curve PNG shows whether it over-fits; a second
PNG shows validation images above their reconstructions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..classic import PIXEL_SIZE, pixel_array
from ..config import Settings
from ..encoders import Encoder, normalise, pick_device
from ..errors import ModelError, UsageError
from ..report import StageReport
from ..store import EmbeddingStore
from .data import in_holdout, load_images, read_photos, sample_rows, write_vectors
from .plots import image_rows, loss_curve
from .state import commit, staging_dir, write_manifest

KIND = "autoencoder"
WEIGHTS = "autoencoder.pt"


def build_autoencoder(latent: int, size: int = PIXEL_SIZE):
    import torch
    from torch import nn

    if size % 8:
        raise UsageError(f"--size must be a multiple of 8, got {size}")
    cells = size // 8

    class ConvAutoencoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(), nn.Linear(128 * cells * cells, latent),
            )
            self.decoder = nn.Sequential(
                nn.Linear(latent, 128 * cells * cells), nn.ReLU(), nn.Unflatten(1, (128, cells, cells)),
                nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(32, 3, 4, stride=2, padding=1), nn.Sigmoid(),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decoder(self.encoder(x))

    return ConvAutoencoder()


def to_tensor_batch(pixels: np.ndarray):
    """uint8 NxHxWx3 -> float NCHW in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))).float().div_(255.0)


class AutoencoderEncoder(Encoder):
    kind = KIND

    def __init__(self, name: str, directory: Path, manifest: dict[str, Any], device: str = "auto") -> None:
        import torch

        self.name = name
        self.size = int(manifest["size"])
        self.input_size = self.size
        self.dim = int(manifest["dim"])
        self.device = pick_device(device)
        self.model = build_autoencoder(self.dim, self.size)
        try:
            state = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state)
        except (OSError, RuntimeError, KeyError) as exc:
            raise ModelError(f"{directory / WEIGHTS} cannot be loaded ({str(exc)[:200]}); run "
                             "`clipsql train autoencoder` again") from None
        self.model.eval().to(self.device)

    def prepare(self, image: Image.Image) -> np.ndarray:
        return pixel_array(image, self.size)

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            latent = self.model.encoder(to_tensor_batch(np.asarray(batch, np.uint8)).to(self.device))
        return normalise(latent.float().cpu().numpy())


def fit_autoencoder(pixels: np.ndarray, latent: int, epochs: int, batch_size: int, lr: float, seed: int,
                    validation: float = 0.1):
    """Train on uint8 NxSxSx3 images; returns the model and per-epoch train and validation losses."""
    import torch

    n = len(pixels)
    if n < 4:
        raise UsageError(f"the autoencoder needs at least 4 images, got {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = max(1, int(round(n * validation)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_autoencoder(latent, pixels.shape[1])
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = torch.nn.MSELoss()
        val_x = to_tensor_batch(pixels[val_idx])
        train_losses: list[float] = []
        val_losses: list[float] = []
        with tqdm(total=epochs, unit="epoch", desc="autoencoder", disable=None) as bar:
            for _ in range(epochs):
                model.train()
                rng.shuffle(train_idx)
                total = 0.0
                for start in range(0, len(train_idx), batch_size):
                    batch = to_tensor_batch(pixels[train_idx[start:start + batch_size]])
                    optimiser.zero_grad()
                    loss = loss_fn(model(batch), batch)
                    loss.backward()
                    optimiser.step()
                    total += loss.item() * len(batch)
                train_losses.append(total / len(train_idx))
                model.eval()
                with torch.inference_mode():
                    val_losses.append(float(loss_fn(model(val_x), val_x)))
                bar.set_postfix(train=f"{train_losses[-1]:.4f}", val=f"{val_losses[-1]:.4f}")
                bar.update(1)
    return model, train_losses, val_losses, val_idx


def train_autoencoder(settings: Settings, name: str = KIND, latent: int = 128, size: int = PIXEL_SIZE,
                      epochs: int = 20, batch_size: int = 128, lr: float = 1e-3, max_images: int | None = None,
                      holdout: float = 0.0, seed: int = 0) -> StageReport:
    import torch

    report = StageReport("train-autoencoder")
    started = time.monotonic()
    photos = read_photos(settings)
    loaded = load_images(settings, photos, lambda image: pixel_array(image, size), target=size,
                         desc="autoencoder images")
    train = np.flatnonzero(~in_holdout(loaded.photo_ids, holdout))
    train = train[sample_rows(len(train), max_images, seed)]
    model, train_losses, val_losses, val_idx = fit_autoencoder(loaded.arrays[train], latent, epochs, batch_size, lr,
                                                               seed)
    staging = staging_dir(settings.data_dir, name)
    torch.save(model.state_dict(), staging / WEIGHTS)
    loss_curve(staging / "loss.png", {"train": train_losses, "validation": val_losses},
               f"autoencoder {name}: reconstruction MSE")
    shown = loaded.arrays[train][val_idx[:8]]
    model.eval()
    with torch.inference_mode():
        rebuilt = (model(to_tensor_batch(shown)).numpy().transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    image_rows(staging / "reconstruction.png", {"validation images": shown, "reconstructed": rebuilt},
               f"{name}: {latent}-d latent, {epochs} epochs")
    write_manifest(staging, {
        "model": name, "kind": KIND, "dim": latent, "size": size, "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "trained_on": int(len(train)), "holdout": holdout, "seed": seed,
        "train_loss": [round(x, 6) for x in train_losses], "validation_loss": [round(x, 6) for x in val_losses],
    })
    directory = commit(settings.data_dir, name, staging)
    encoder = AutoencoderEncoder(name, directory, {"size": size, "dim": latent}, "cpu")
    vectors = np.concatenate([encoder.encode_images(loaded.arrays[s:s + 1024])
                              for s in range(0, len(loaded.arrays), 1024)])
    written = write_vectors(EmbeddingStore(settings.paths().embeddings, name), loaded.photo_ids, loaded.urls,
                            loaded.sha256, vectors, KIND)
    report.rows_in = photos.num_rows
    report.rows_out = written
    report.rejected = sum(loaded.failures.values())
    report.rejects_by_reason.update(loaded.failures)
    report.details = {"model": name, "latent": latent, "epochs": epochs, "trained_on": int(len(train)),
                      "final_train_loss": round(train_losses[-1], 6), "final_validation_loss": round(val_losses[-1], 6),
                      "loss_curve": str(directory / "loss.png"), "reconstruction": str(directory / "reconstruction.png"),
                      "seconds": round(time.monotonic() - started, 1)}
    report.notes.append(f"weights, loss curve and reconstructions in {directory}; vectors of {written} photos "
                        f"written as model {name!r}")
    return report.finish()
