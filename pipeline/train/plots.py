"""PNG figures for training and evaluation, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def loss_curve(path: Path, curves: dict[str, Sequence[float]], title: str, ylabel: str = "loss",
               kept_epoch: int | None = None) -> Path:
    """One line per curve (train, validation...) over epochs; a dotted line marks the epoch kept."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    for label, values in curves.items():
        if len(values):
            axes.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
    if kept_epoch is not None:
        axes.axvline(kept_epoch, color="grey", linestyle=":", label=f"kept (epoch {kept_epoch})")
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def image_rows(path: Path, rows: dict[str, np.ndarray], title: str) -> Path:
    """Rows of uint8 HxWx3 images with a label each (e.g. originals above their reconstructions)."""
    plt = _pyplot()
    n = max(len(images) for images in rows.values())
    figure, axes = plt.subplots(len(rows), n, figsize=(1.2 * n, 1.3 * len(rows)), dpi=100, squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n):
            axis = axes[r][c]
            axis.axis("off")
            if c < len(images):
                axis.imshow(images[c], interpolation="nearest")
        axes[r][0].set_title(label, fontsize=8, loc="left")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def grouped_bars(path: Path, groups: list[str], series: dict[str, Sequence[float]], chance: Sequence[float] | None,
                 title: str, ylabel: str) -> Path:
    """Bars per group (x) for each series (colour), with the chance level as a black tick per group."""
    plt = _pyplot()
    width = 0.8 / max(len(series), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.5 * len(groups) * max(len(series), 2) ** 0.5 + 2) + 2, 4.5),
                                dpi=100)
    x = np.arange(len(groups))
    for i, (label, values) in enumerate(series.items()):
        axes.bar(x - 0.4 + width * (i + 0.5), values, width, label=label)
    if chance is not None:
        axes.hlines(chance, x - 0.45, x + 0.45, colors="black", linestyles="dashed", linewidth=1, label="chance")
    axes.set_xticks(x)
    axes.set_xticklabels(groups, rotation=45 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center",
                         fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
