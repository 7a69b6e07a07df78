"""The `clipsql train` and `clipsql eval` command lines (pipeline.cli mounts them)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from ..config import Settings
from ..report import StageReport

log = logging.getLogger("clipsql")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def add_train_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
                     positive_int: Callable[[str], int]) -> None:
    train = commands.add_parser(
        "train", parents=[common], help="fit an encoder on the loaded images: pca, autoencoder, or a triplet head",
        description="Fit an encoder on the photos of the data directory. Its state goes to DATA_DIR/models/NAME/, "
                    "its vectors to DATA_DIR/embeddings/ (then `clipsql load`), and `--model NAME` uses it "
                    "everywhere. Training again replaces the model and its vectors.")
    kinds = train.add_subparsers(dest="kind", metavar="KIND", required=True)

    def kind(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = kinds.add_parser(name, help=help_text, description=help_text, parents=[common])
        parser.add_argument("--max-images", type=positive_int, metavar="N",
                            help="train on at most N photos (a seeded random choice; default all)")
        parser.add_argument("--holdout", type=_fraction, default=0.0, metavar="F",
                            help="leave out the fraction F of photos (by a hash of their id) from training, so "
                                 "`clipsql eval --holdout F` measures on unseen photos (default 0)")
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        return parser

    pca = kind("pca", "principal components of 32x32 pixel vectors (system 2)")
    pca.add_argument("--components", type=positive_int, default=64, help="vector length (default 64)")
    pca.add_argument("--name", default="pca", help="model name (default pca)")

    auto = kind("autoencoder", "a small convolutional autoencoder; its latent layer is the vector (system 2)")
    auto.add_argument("--latent", type=positive_int, default=128, help="vector length (default 128)")
    auto.add_argument("--epochs", type=positive_int, default=20, help="passes over the images (default 20)")
    auto.add_argument("--batch-size", type=positive_int, default=128, help="images per step (default 128)")
    auto.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 0.001)")
    auto.add_argument("--name", default="autoencoder", help="model name (default autoencoder)")

    triplet = kind("triplet", "a projection head on a model's stored vectors, trained with triplet loss (system 3)")
    triplet.add_argument("--base", required=True, metavar="MODEL", help="the model whose stored vectors are refined")
    triplet.add_argument("--labels", default="collections", choices=("collections", "keywords", "augment"),
                         help="what makes a positive: the same class collection (default), a shared keyword, or "
                              "an edit of the same image (augment: near-duplicate finder; encodes the images)")
    triplet.add_argument("--mining", default="batch-hard", choices=("batch-hard", "random"),
                         help="each anchor's hardest positive and negative in the batch (default) or random ones")
    triplet.add_argument("--margin", type=_positive_float, default=0.2, help="triplet margin (default 0.2)")
    triplet.add_argument("--epochs", type=positive_int, default=30, help="default 30")
    triplet.add_argument("--dim", type=positive_int, default=128, help="vector length (default 128)")
    triplet.add_argument("--hidden", type=positive_int, default=512, help="hidden layer width (default 512)")
    triplet.add_argument("--classes-per-batch", type=positive_int, default=16, dest="p",
                         help="P: labels per batch (default 16)")
    triplet.add_argument("--per-class", type=positive_int, default=8, dest="k", help="K: photos per label (default 8)")
    triplet.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 0.001)")
    triplet.add_argument("--views", type=positive_int, default=3, help="augment: edited copies per image (default 3)")
    triplet.add_argument("--device", choices=("auto", "cpu", "cuda"), help="augment: where the base model runs")
    triplet.add_argument("--name", help="model name (default triplet-BASE)")


def run_train(args: argparse.Namespace, settings: Settings) -> StageReport:
    common = {"max_images": args.max_images, "holdout": args.holdout, "seed": args.seed}
    if args.kind == "pca":
        from .pca import train_pca

        return train_pca(settings, args.name, components=args.components, **common)
    if args.kind == "autoencoder":
        from .autoencoder import train_autoencoder

        return train_autoencoder(settings, args.name, latent=args.latent, epochs=args.epochs,
                                 batch_size=args.batch_size, lr=args.lr, **common)
    from .triplet import train_triplet

    return train_triplet(settings, args.base, args.labels, name=args.name, mining=args.mining, margin=args.margin,
                         epochs=args.epochs, out_dim=args.dim, hidden=args.hidden, p=args.p, k=args.k, lr=args.lr,
                         views=args.views, device=args.device, **common)


def add_eval_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
                    formats: argparse.ArgumentParser, positive_int: Callable[[str], int]) -> None:
    description = ("Leave-one-out retrieval quality on the labelled photos of the data directory: for every photo, "
                   "are its k nearest photos of the same class? Prints precision@k, recall@k, mAP@k, mAP and the "
                   "chance level per model (and per class with --per-class), writes a PNG bar chart and a JSON "
                   "report under DATA_DIR/reports/.")
    parser = commands.add_parser("eval", help="measure retrieval quality of models on a labelled set",
                                 description=description, parents=[common, formats])
    parser.add_argument("--model", action="append", metavar="MODEL",
                        help="a model with stored vectors; repeat to compare several (default: every stored model)")
    parser.add_argument("-k", type=positive_int, default=5, help="results per query (default 5)")
    parser.add_argument("--labels", default="collections", choices=("collections", "keywords"),
                        help="relevant = same class collection (default) or any shared keyword")
    parser.add_argument("--per-class", action="store_true", help="also print one row per class")
    parser.add_argument("--holdout", type=_fraction, default=0.0, metavar="F",
                        help="evaluate only on the photos `clipsql train --holdout F` left out")
    parser.add_argument("--queries", type=positive_int, metavar="N",
                        help="a seeded random sample of N query photos (default: every photo)")
    parser.add_argument("--index", action="store_true",
                        help="also run the queries through the database's search, to show the cost of approximation")
    parser.add_argument("--method", default="auto", choices=("auto", "hnsw", "ivf"),
                        help="with --index: which search plan (default auto)")
    parser.add_argument("--chart", metavar="PNG", help="where to write the bar chart (default DATA_DIR/reports/)")


def run_eval(args: argparse.Namespace, settings: Settings) -> list[dict]:
    from pathlib import Path

    from ..evaluate import OVERALL, evaluate

    def go(db=None):
        return evaluate(settings, args.model, k=args.k, labels=args.labels, holdout=args.holdout,
                        queries=args.queries, index=args.index, method=args.method,
                        chart=Path(args.chart) if args.chart else None, db=db)

    if args.index:
        from ..db import open_database

        with open_database(settings) as db:
            evaluation = go(db)
    else:
        evaluation = go()
    log.info("eval: %d photos, %d classes (%s), k=%d; chart %s, report %s", evaluation.photos, evaluation.classes,
             evaluation.labels, evaluation.k, evaluation.chart, evaluation.report)
    return [r for r in evaluation.rows if args.per_class or r["class"] == OVERALL]
