"""`clipsql train triplet`: a projection head trained with triplet loss on a base model's vectors
(system 3).

The head (two linear layers, output L2-normalised) learns from the base encoder's STORED
vectors, so training costs seconds, not a pass of the image model. A triplet is an anchor, a
positive (same label) and a negative (another label); the loss is max(0, d(a,p) - d(a,n) +
margin) with d the Euclidean distance between unit vectors. Batches hold P labels x K photos;
`batch-hard` mining takes each anchor's farthest positive and nearest negative in the batch,
`random` a random one of each.

What counts as "same" decides what the model learns: `--labels collections` (the class folders
of an image-set source) or `keywords` give a category-level finder; `--labels augment` makes
positives from edits of one image (crops, rescaling, colour changes, JPEG re-encoding, each
passed through the base encoder), which gives a near-duplicate finder.

The result is a new model (default `triplet-<base>`): the head applied to every stored base
vector is written as its embedding parts, and the model encodes new images as base + head.
"""

from __future__ import annotations

import copy
import io
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, ImageEnhance

from ..config import Settings
from ..encoders import Encoder, load_encoder, normalise, pick_device
from ..errors import ModelError, UsageError
from ..report import StageReport
from ..store import EmbeddingStore, canonical_model_name, model_slug
from .data import (
    in_holdout,
    load_images,
    read_labels,
    read_photos,
    sample_rows,
    stored_vectors,
    write_vectors,
)
from .plots import loss_curve
from .state import commit, staging_dir, write_manifest

KIND = "triplet"
WEIGHTS = "head.pt"
MINING = ("batch-hard", "random")
LABEL_SOURCES = ("collections", "keywords", "augment")
MAX_LABELS = 8192  # keyword labels kept (most frequent) for the label matrix


def default_name(base: str) -> str:
    base = canonical_model_name(base)
    return f"triplet-{base}" if "/" not in base else f"triplet-{model_slug(base)}"


def build_head(in_dim: int, hidden: int, out_dim: int):
    from torch import nn

    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


def apply_head(head, vectors: np.ndarray, batch: int = 8192) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(vectors), batch):
            out.append(head(torch.from_numpy(np.ascontiguousarray(vectors[start:start + batch], np.float32))).numpy())
    return normalise(np.concatenate(out) if out else np.zeros((0, head[-1].out_features), np.float32))


def triplet_loss(embeddings, same, mining: str, margin: float, generator=None):
    """Mean triplet loss over the anchors that have a positive and a negative in the batch.

    `embeddings`: n x d unit vectors; `same`: n x n bool, True where two rows share a label."""
    import torch

    n = embeddings.shape[0]
    distance = torch.sqrt(torch.clamp(2.0 - 2.0 * embeddings @ embeddings.T, min=1e-12))
    eye = torch.eye(n, dtype=torch.bool)
    positive = same & ~eye
    negative = ~same
    valid = positive.any(dim=1) & negative.any(dim=1)
    if not bool(valid.any()):
        return None
    if mining == "batch-hard":
        d_ap = distance.masked_fill(~positive, float("-inf")).max(dim=1).values
        d_an = distance.masked_fill(~negative, float("inf")).min(dim=1).values
    else:
        scores = torch.rand(n, n, generator=generator)
        pick_p = scores.masked_fill(~positive, -1.0).argmax(dim=1, keepdim=True)
        pick_n = scores.masked_fill(~negative, -1.0).argmax(dim=1, keepdim=True)
        d_ap = distance.gather(1, pick_p).squeeze(1)
        d_an = distance.gather(1, pick_n).squeeze(1)
    losses = torch.relu(d_ap - d_an + margin)
    return losses[valid].mean()


class LabelMatrix:
    """Which rows share a label, and each label's rows for sampling batches.

    Single-label rows (class folders, near-duplicate groups) are compared by label id; rows with
    several labels (keywords) through a rows x labels matrix of the most frequent labels."""

    def __init__(self, labels: list[list[str]]) -> None:
        counts: dict[str, int] = {}
        for row in labels:
            for label in row:
                counts[label] = counts.get(label, 0) + 1
        kept = sorted((c for c in counts if counts[c] >= 2), key=lambda c: (-counts[c], c))[:MAX_LABELS]
        index = {label: i for i, label in enumerate(kept)}
        self.names = kept
        self.single = all(len(row) <= 1 for row in labels)
        if self.single:
            self.ids = np.array([index.get(row[0], -1) if row else -1 for row in labels], dtype=np.int64)
            order = np.argsort(self.ids, kind="stable")
            bounds = np.searchsorted(self.ids[order], np.arange(len(kept) + 1))
            self.rows_of = [order[bounds[j]:bounds[j + 1]] for j in range(len(kept))]
        else:
            self.matrix = np.zeros((len(labels), len(kept)), dtype=np.float32)
            for row, row_labels in enumerate(labels):
                for label in row_labels:
                    if label in index:
                        self.matrix[row, index[label]] = 1.0
            self.rows_of = [np.flatnonzero(self.matrix[:, j]) for j in range(len(kept))]

    def same(self, rows: np.ndarray):
        import torch

        if self.single:
            ids = torch.from_numpy(self.ids[rows])
            return (ids[:, None] == ids[None, :]) & (ids[:, None] >= 0)
        block = torch.from_numpy(self.matrix[rows])
        return (block @ block.T) > 0

    def batches(self, rng: np.random.Generator, p: int, k: int, n_batches: int):
        """P labels x K rows each (with replacement when a label has fewer than K rows)."""
        labels = np.arange(len(self.names))
        for _ in range(n_batches):
            chosen = rng.choice(labels, size=min(p, len(labels)), replace=False)
            rows = [rng.choice(self.rows_of[c], size=k, replace=len(self.rows_of[c]) < k) for c in chosen]
            yield np.concatenate(rows)


def fit_head(vectors: np.ndarray, labels: list[list[str]], *, out_dim: int = 128, hidden: int = 512,
             mining: str = "batch-hard", margin: float = 0.2, epochs: int = 30, p: int = 16, k: int = 8,
             lr: float = 1e-3, validation: float = 0.1, seed: int = 0, groups: np.ndarray | None = None):
    """Train a head on `vectors` (n x d) with `labels` (per row); returns the head, the train and
    validation losses per epoch, and the epoch whose weights were kept.

    The validation rows are whole `groups` (default: single rows; the views of one image stay
    together). A head over-fits a few hundred labelled photos within a few epochs (its validation
    loss turns up while the training loss still falls), so the weights of the epoch with the
    lowest validation loss are kept: early stopping, with the whole curve still drawn."""
    import torch

    if mining not in MINING:
        raise UsageError(f"--mining {mining!r}: expected one of {', '.join(MINING)}")
    rng = np.random.default_rng(seed)
    groups = np.arange(len(vectors)) if groups is None else np.asarray(groups)
    unique_groups = np.unique(groups)
    held = rng.permutation(unique_groups)[:int(round(len(unique_groups) * validation))]
    is_val = np.isin(groups, held)
    val_rows, train_rows = np.flatnonzero(is_val), np.flatnonzero(~is_val)
    n_val = len(val_rows)
    train_labels = LabelMatrix([labels[i] for i in train_rows])
    if len(train_labels.names) < 2:
        raise UsageError(f"triplet training needs at least 2 labels with 2 or more photos each; found "
                         f"{len(train_labels.names)} among {len(train_rows)} training photos")
    val_labels = LabelMatrix([labels[i] for i in val_rows]) if n_val else None
    if val_labels is not None and len(val_labels.names) < 2:
        val_labels = None
    x_train = torch.from_numpy(np.ascontiguousarray(vectors[train_rows], np.float32))
    x_val = torch.from_numpy(np.ascontiguousarray(vectors[val_rows], np.float32))
    per_epoch = max(1, int(np.ceil(len(train_rows) / (p * k))))
    train_losses: list[float] = []
    val_losses: list[float] = []
    from tqdm import tqdm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        head = build_head(vectors.shape[1], hidden, out_dim)
        optimiser = torch.optim.Adam(head.parameters(), lr=lr)
        best: tuple[float, int, Any] = (float("inf"), epochs, None)
        with tqdm(total=epochs, unit="epoch", desc=f"triplet ({mining})", disable=None) as bar:
            for _ in range(epochs):
                head.train()
                total, used = 0.0, 0
                for rows in train_labels.batches(rng, p, k, per_epoch):
                    embeddings = torch.nn.functional.normalize(head(x_train[rows]), dim=1)
                    loss = triplet_loss(embeddings, train_labels.same(rows), mining, margin, generator)
                    if loss is None:
                        continue
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    total += loss.item()
                    used += 1
                train_losses.append(total / max(used, 1))
                if val_labels is not None:
                    head.eval()
                    val_rng = np.random.default_rng(seed + 1)  # the same validation batches every epoch
                    values = []
                    with torch.inference_mode():
                        for rows in val_labels.batches(val_rng, p, k, max(1, int(np.ceil(n_val / (p * k))))):
                            embeddings = torch.nn.functional.normalize(head(x_val[rows]), dim=1)
                            loss = triplet_loss(embeddings, val_labels.same(rows), mining, margin,
                                                torch.Generator().manual_seed(seed + 2))
                            if loss is not None:
                                values.append(float(loss))
                    val_losses.append(float(np.mean(values)) if values else float("nan"))
                    if values and val_losses[-1] < best[0]:
                        best = (val_losses[-1], len(val_losses), copy.deepcopy(head.state_dict()))
                bar.set_postfix(loss=f"{train_losses[-1]:.4f}")
                bar.update(1)
    if best[2] is not None:  # the weights of the epoch that did best on photos it did not train on
        head.load_state_dict(best[2])
    head.eval()
    return head, train_losses, val_losses, best[1]


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A near-duplicate of `image`: a crop of 60-100% of its area, rescaled, colours changed, re-encoded."""
    width, height = image.size
    scale = float(np.sqrt(rng.uniform(0.6, 1.0)))
    w, h = max(8, int(width * scale)), max(8, int(height * scale))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    out = image.crop((left, top, left + w, top + h))
    factor = rng.uniform(0.35, 1.0)
    small = (max(8, int(out.width * factor)), max(8, int(out.height * factor)))
    out = out.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR)
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.75, 1.25))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.75, 1.25))
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.6, 1.4))
    buffer = io.BytesIO()
    out.convert("RGB").save(buffer, format="JPEG", quality=int(rng.integers(40, 90)))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


class TripletEncoder(Encoder):
    """Base encoder, then the trained head."""

    kind = KIND

    def __init__(self, name: str, directory: Path, manifest: dict[str, Any], data_dir: Path,
                 device: str = "auto") -> None:
        import torch

        self.name = name
        self.base = load_encoder(manifest["base"], device, data_dir=data_dir)
        self.input_size = self.base.input_size
        self.device = pick_device(device)
        self.dim = int(manifest["dim"])
        self.head = build_head(int(manifest["in_dim"]), int(manifest["hidden"]), self.dim)
        try:
            self.head.load_state_dict(torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True))
        except (OSError, RuntimeError, KeyError) as exc:
            raise ModelError(f"{directory / WEIGHTS} cannot be loaded ({str(exc)[:200]}); run "
                             "`clipsql train triplet` again") from None
        if self.base.dim != int(manifest["in_dim"]):
            raise ModelError(f"model {name}: its base {manifest['base']} now gives {self.base.dim} dimensions, the "
                             f"head expects {manifest['in_dim']}; run `clipsql train triplet` again")
        self.head.eval()

    def prepare(self, image: Image.Image) -> np.ndarray:
        return self.base.prepare(image)

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        return apply_head(self.head, self.base.encode_images(batch))


def _augmented_views(settings: Settings, base: Encoder, photos: pa.Table, views: int, seed: int):
    """For each photo (original image), `views` augmented copies encoded with the base encoder."""

    def make(image: Image.Image) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(image.tobytes())])
        return np.stack([base.prepare(augment(image, rng)) for _ in range(views)])

    loaded = load_images(settings, photos, make, target=max(base.input_size, 64), desc="augment")
    prepared = loaded.arrays.reshape(-1, *loaded.arrays.shape[2:])
    encoded = np.concatenate([base.encode_images(prepared[s:s + 64]) for s in range(0, len(prepared), 64)])
    return loaded, encoded.reshape(len(loaded.photo_ids), views, -1)


def train_triplet(settings: Settings, base: str, labels: str = "collections", *, name: str | None = None,
                  mining: str = "batch-hard", margin: float = 0.2, epochs: int = 30, out_dim: int = 128,
                  hidden: int = 512, p: int = 16, k: int = 8, lr: float = 1e-3, views: int = 3,
                  max_images: int | None = None, holdout: float = 0.0, seed: int = 0,
                  device: str | None = None) -> StageReport:
    if labels not in LABEL_SOURCES:
        raise UsageError(f"--labels {labels!r}: expected one of {', '.join(LABEL_SOURCES)}")
    if mining not in MINING:
        raise UsageError(f"--mining {mining!r}: expected one of {', '.join(MINING)}")
    report = StageReport("train-triplet")
    started = time.monotonic()
    base = canonical_model_name(base)
    name = name or default_name(base)
    if canonical_model_name(name) == base:
        raise UsageError(f"--name {name!r} is the base model itself; choose another name")
    embeddings_dir = settings.paths().embeddings
    stored = stored_vectors(embeddings_dir, base)
    photos = read_photos(settings)
    current = set(photos["photo_id"].to_pylist())
    keep_rows = [i for i, p_id in enumerate(stored.photo_ids) if p_id in current]
    ids = [stored.photo_ids[i] for i in keep_rows]
    base_vectors = stored.vectors[keep_rows]
    trainable = np.flatnonzero(~in_holdout(ids, holdout))
    trainable = trainable[sample_rows(len(trainable), max_images, seed)]
    if labels == "augment":
        base_encoder = load_encoder(base, device or settings.device, data_dir=settings.data_dir)
        chosen = pa.table({"photo_id": [ids[i] for i in trainable]}).join(photos, "photo_id", join_type="inner")
        loaded, views_vectors = _augmented_views(settings, base_encoder, chosen, views, seed)
        row_of = {p_id: i for i, p_id in enumerate(ids)}
        originals = base_vectors[[row_of[p_id] for p_id in loaded.photo_ids]]
        train_x = np.concatenate([originals[:, None, :], views_vectors], axis=1).reshape(-1, base_vectors.shape[1])
        train_labels = [[p_id] for p_id in loaded.photo_ids for _ in range(views + 1)]
        groups = np.repeat(np.arange(len(loaded.photo_ids)), views + 1)
        report.rejected = sum(loaded.failures.values())
        report.rejects_by_reason.update(loaded.failures)
        trained_on = len(loaded.photo_ids)
    else:
        by_photo = read_labels(settings, labels)
        labelled = [i for i in trainable if by_photo.get(ids[i])]
        if not labelled:
            raise UsageError(f"--labels {labels}: none of the {len(trainable)} photos with {base} vectors has a label; "
                             "use an image-set source with class folders, or --labels keywords / augment")
        train_x = base_vectors[labelled]
        train_labels = [by_photo[ids[i]] for i in labelled]
        groups = None
        trained_on = len(labelled)
    head, train_losses, val_losses, best_epoch = fit_head(train_x, train_labels, out_dim=out_dim, hidden=hidden, mining=mining,
                                              margin=margin, epochs=epochs, p=p, k=k if labels != "augment" else views + 1,
                                              lr=lr, seed=seed, groups=groups)
    import torch

    staging = staging_dir(settings.data_dir, name)
    torch.save(head.state_dict(), staging / WEIGHTS)
    curves = {"train": train_losses}
    if val_losses:
        curves["validation"] = val_losses
    loss_curve(staging / "loss.png", curves, f"{name}: triplet loss, {mining}, margin {margin}, {labels}",
               kept_epoch=best_epoch if val_losses else None)
    write_manifest(staging, {
        "model": name, "kind": KIND, "base": base, "in_dim": int(base_vectors.shape[1]), "hidden": hidden,
        "dim": out_dim, "labels": labels, "mining": mining, "margin": margin, "epochs": epochs, "p": p, "k": k,
        "views": views if labels == "augment" else None, "trained_on": trained_on, "holdout": holdout, "seed": seed,
        "kept_epoch": best_epoch,
        "train_loss": [round(x, 6) for x in train_losses], "validation_loss": [round(x, 6) for x in val_losses],
    })
    directory = commit(settings.data_dir, name, staging)
    vectors = apply_head(head, base_vectors)
    written = write_vectors(EmbeddingStore(embeddings_dir, name), ids, [stored.urls[i] for i in keep_rows],
                            [stored.sha256[i] for i in keep_rows], vectors, KIND)
    report.rows_in = len(ids)
    report.rows_out = written
    report.details = {"model": name, "base": base, "labels": labels, "mining": mining, "trained_on": trained_on,
                      "first_loss": round(train_losses[0], 6), "final_loss": round(train_losses[-1], 6),
                      "kept_epoch": best_epoch,
                      "loss_curve": str(directory / "loss.png"), "seconds": round(time.monotonic() - started, 1)}
    report.notes.append(f"head and loss curve in {directory}; vectors of {written} photos written as model {name!r}")
    return report.finish()
