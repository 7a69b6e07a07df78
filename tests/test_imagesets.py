"""Labelled image sets as sources: class folders (Tiny-ImageNet / SIMages / tuxpaint layouts),
CIFAR-10 python batches (directory and tar.gz) and MNIST-style idx files, through the real
`clipsql extract` into the Unsplash Lite tables; pixels are compared with the arrays the
fixtures were written from, and bad files must give named errors or counted rejects."""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.imagesets import FASHION_MNIST_CLASSES, detect, parse_source
from tests.fixtures.labelled import (
    SHAPE_CLASSES,
    idx_bytes,
    write_cifar_batches,
    write_class_folders,
    write_idx,
)
from tests.helpers import run_cli


def tables(data: Path) -> dict:
    return {name: pq.read_table(data / "parquet" / f"{name}.parquet").to_pandas()
            for name in ("photos", "keywords", "collections", "conversions", "colors")}


def labels_by_photo(t: dict) -> dict[str, str]:
    collections = t["collections"]
    assert collections["collection_id"].str.startswith("class:").all()
    return dict(zip(collections["photo_id"], collections["collection_id"].str.removeprefix("class:"), strict=True))


# -- class folders ----------------------------------------------------------------------------------


def test_folder_source_writes_the_unsplash_tables(tmp_path: Path, capsys) -> None:
    root = tmp_path / "set"
    written = write_class_folders(root, per_class=5)
    (root / "red-circle" / "red_circle_00.txt").write_text("A red disc.\nfr.utf8=Un disque rouge.\n")
    nested = root / "blue-square" / "dark" / "navy_box.png"
    nested.parent.mkdir()
    Image.new("RGB", (20, 10), (0, 0, 90)).save(nested)
    written[nested] = "blue-square"
    data = tmp_path / "data"
    result = run_cli(capsys, "extract", "--source", f"folder:{root}", "--data-dir", data)
    assert result.code == 0, result.err
    t = tables(data)
    photos = t["photos"]
    assert len(photos) == len(written) == 21
    assert photos["photo_id"].is_unique
    by_path = {Path(p): pid for pid, p in zip(photos["photo_id"], photos["photo_image_url"], strict=True)}
    assert set(by_path) == {p.resolve() for p in written}  # absolute paths of the images themselves
    labels = labels_by_photo(t)
    assert {labels[by_path[p.resolve()]] for p in written} == set(SHAPE_CLASSES)
    assert all(labels[by_path[p.resolve()]] == label for p, label in written.items())
    titles = dict(zip(t["collections"]["collection_id"], t["collections"]["collection_title"], strict=True))
    assert titles["class:red-circle"] == "red-circle"
    nav = photos.set_index("photo_id").loc[by_path[nested.resolve()]]
    assert (nav["photo_width"], nav["photo_height"]) == (20, 10)
    keywords = t["keywords"].groupby("photo_id")["keyword"].apply(set)
    assert keywords[by_path[nested.resolve()]] >= {"blue-square", "dark", "navy", "box"}
    captioned = photos.set_index("photo_id").loc[by_path[(root / "red-circle" / "red_circle_00.png").resolve()]]
    assert captioned["photo_description"] == "A red disc."  # the first line, not the translation
    assert t["conversions"].empty and t["colors"].empty
    # round robin: the first four photos are one of each class, so --limit keeps classes balanced
    first = [labels[p] for p in photos["photo_id"][:4]]
    assert sorted(first) == sorted(SHAPE_CLASSES)


def test_run_on_a_folder_source_end_to_end(tmp_path: Path, capsys) -> None:
    root = tmp_path / "set"
    written = write_class_folders(root, per_class=3)
    data = tmp_path / "data"
    result = run_cli(capsys, "run", "--source", f"folder:{root}", "--model", "color-histogram", "--data-dir", data)
    assert result.code == 0, result.err
    query = next(p for p, label in written.items() if label == "yellow-stripes")
    found = run_cli(capsys, "search", "--image", query, "-k", "3", "--format", "json", "--data-dir", data).json()
    assert Path(found[0]["photo_image_url"]) == query.resolve()
    sql = run_cli(capsys, "sql", "SELECT collection_title, count() AS n FROM collections GROUP BY collection_title "
                  "ORDER BY collection_title", "--format", "json", "--data-dir", data).json()
    assert sql == [{"collection_title": label, "n": 3} for label in sorted(SHAPE_CLASSES)]


def test_folder_limit_is_balanced_and_rerun_reuses_the_conversion(tmp_path: Path, capsys) -> None:
    root = tmp_path / "set"
    write_class_folders(root, per_class=6)
    data = tmp_path / "data"
    assert run_cli(capsys, "extract", "--source", str(root), "--limit", "8", "--data-dir", data).code == 0  # auto-detected
    labels = labels_by_photo(tables(data))
    assert sorted(labels.values()) == sorted(list(SHAPE_CLASSES) * 2)
    ids_before = set(tables(data)["photos"]["photo_id"])
    again = run_cli(capsys, "extract", "--source", f"folder:{root}", "--limit", "8", "--data-dir", data)
    assert again.code == 0
    assert "conversion unchanged" in again.err and "source unchanged" in again.err
    assert set(tables(data)["photos"]["photo_id"]) == ids_before  # ids are stable
    (root / "red-circle" / "extra.png").write_bytes((root / "red-circle" / "red_circle_00.png").read_bytes())
    changed = run_cli(capsys, "extract", "--source", f"folder:{root}", "--data-dir", data)
    assert changed.code == 0 and "converted 25 images" in changed.err
    assert ids_before <= set(tables(data)["photos"]["photo_id"])


def test_bad_files_in_a_folder_are_counted_and_listed(tmp_path: Path, capsys) -> None:
    root = tmp_path / "set"
    write_class_folders(root, per_class=2)
    (root / "red-circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "blue-square" / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / "blue-square" / "sound.ogg").write_bytes(b"OggS")  # not an image at all: ignored
    os.symlink(root / "green-triangle" / "green_triangle_00.png", root / "yellow-stripes" / "alias.png")
    data = tmp_path / "data"
    result = run_cli(capsys, "extract", "--source", f"folder:{root}", "--data-dir", data)
    assert result.code == 0, result.err
    assert len(tables(data)["photos"]) == 8
    with (data / "rejects" / "convert-folder.csv").open() as handle:
        rejects = {Path(row["file"]).name: row["reason"] for row in csv.DictReader(handle)}
    assert rejects == {"broken.png": "not_an_image", "drawing.svg": "unsupported_format", "alias.png": "duplicate"}
    assert "rejected 3" in result.err and "images: not_an_image 1" in result.err


def test_tiny_imagenet_layout_uses_words_txt(tmp_path: Path, capsys) -> None:
    root = tmp_path / "tiny-imagenet-200"
    for wnid, label in (("n01443537", "red-circle"), ("n01629819", "blue-square")):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), SHAPE_CLASSES[label][0]).save(folder / f"{wnid}_{i}.JPEG")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n")
    data = tmp_path / "data"
    assert run_cli(capsys, "extract", "--source", f"folder:{root / 'train'}", "--data-dir", data).code == 0
    t = tables(data)
    titles = dict(zip(t["collections"]["collection_id"], t["collections"]["collection_title"], strict=True))
    assert titles == {"class:n01443537": "goldfish, Carassius auratus", "class:n01629819": "European fire salamander"}
    assert "goldfish" in set(t["keywords"]["keyword"])
    assert "images" not in set(t["keywords"]["keyword"])


def test_folder_source_errors(tmp_path: Path, capsys) -> None:
    missing = run_cli(capsys, "extract", "--source", f"folder:{tmp_path / 'nope'}", "--data-dir", tmp_path / "d")
    assert missing.code == 3 and "does not exist" in missing.err
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "notes.md").write_text("x")
    empty = run_cli(capsys, "extract", "--source", f"folder:{tmp_path / 'empty'}", "--data-dir", tmp_path / "d")
    assert empty.code == 3 and "no image files" in empty.err


# -- CIFAR-10 --------------------------------------------------------------------------------------


def _check_arrays(data: Path, expected: dict[str, tuple[np.ndarray, int]], names: list[str]) -> None:
    t = tables(data)
    labels = labels_by_photo(t)
    photos = t["photos"].set_index("photo_id")
    assert set(photos.index) == set(expected)
    for photo_id, (pixels, label) in expected.items():
        with Image.open(photos.loc[photo_id, "photo_image_url"]) as image:
            assert np.array_equal(np.asarray(image), pixels)
        assert labels[photo_id] == names[label]


def test_cifar10_batches(tmp_path: Path, capsys) -> None:
    batches = write_cifar_batches(tmp_path / "cifar-10-batches-py", per_batch=10)
    data = tmp_path / "data"
    result = run_cli(capsys, "extract", "--source", f"cifar10:{tmp_path}", "--data-dir", data)
    assert result.code == 0, result.err
    names = list(SHAPE_CLASSES)
    expected = {}
    for batch, tag in (("data_batch_1", "train1"), ("test_batch", "test")):
        images, labels, _ = batches[batch]
        expected.update({f"cifar10-{tag}-{i:05d}": (images[i], int(labels[i])) for i in range(len(images))})
    _check_arrays(data, expected, names)
    keywords = tables(data)["keywords"].groupby("photo_id")["keyword"].apply(set)
    assert {"red", "circle"} <= keywords[next(p for p, (_, c) in expected.items() if c == 0)]
    assert detect(tmp_path / "cifar-10-batches-py") == "cifar10"


def test_cifar10_tar_gz_and_missing_meta(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    batches = write_cifar_batches(folder, per_batch=6, batches=("data_batch_1",), meta=False)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    data = tmp_path / "data"
    result = run_cli(capsys, "extract", "--source", str(archive), "--data-dir", data)  # detected by name
    assert result.code == 0, result.err
    assert "classes are named by their numbers" in result.err
    images, labels, _ = batches["data_batch_1"]
    _check_arrays(data, {f"cifar10-train1-{i:05d}": (images[i], int(labels[i])) for i in range(6)},
                  [str(n) for n in range(10)])


def test_cifar10_corrupt_and_hostile_pickles_are_refused(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "c"
    write_cifar_batches(folder, per_batch=4, batches=("data_batch_1", "data_batch_2"))
    (folder / "data_batch_2").write_bytes((folder / "data_batch_2").read_bytes()[:200])
    corrupt = run_cli(capsys, "extract", "--source", f"cifar10:{folder}", "--data-dir", tmp_path / "d1")
    assert corrupt.code == 3 and "data_batch_2" in corrupt.err and "not a readable CIFAR-10" in corrupt.err

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    hostile = run_cli(capsys, "extract", "--source", f"cifar10:{folder}", "--data-dir", tmp_path / "d2")
    assert hostile.code == 3 and "refusing to load" in hostile.err
    assert not (tmp_path / "pwned").exists()
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((3, 10), np.uint8), b"labels": [0, 1, 2]}))
    wrong = run_cli(capsys, "extract", "--source", f"cifar10:{folder}", "--data-dir", tmp_path / "d3")
    assert wrong.code == 3 and "N x 3072" in wrong.err


# -- idx (MNIST, Fashion-MNIST) ----------------------------------------------------------------------


def test_idx_files_gz_and_plain(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "fashion-mnist"
    train_pixels, train_labels = write_idx(folder, 9, "train", seed=1)
    test_pixels, test_labels = write_idx(folder, 5, "t10k", seed=2, compress=False)
    data = tmp_path / "data"
    result = run_cli(capsys, "extract", "--source", f"idx:{folder}", "--data-dir", data)
    assert result.code == 0, result.err
    expected = {f"train-{i:05d}": (train_pixels[i], int(train_labels[i])) for i in range(9)}
    expected.update({f"t10k-{i:05d}": (test_pixels[i], int(test_labels[i])) for i in range(5)})
    _check_arrays(data, expected, list(FASHION_MNIST_CLASSES))  # "fashion" in the path: its class names
    assert parse_source(str(folder)) == ("idx", folder)
    single = run_cli(capsys, "extract", "--source", str(folder / "t10k-images-idx3-ubyte"), "--data-dir",
                     tmp_path / "d2")
    assert single.code == 0 and len(tables(tmp_path / "d2")["photos"]) == 5


def test_idx_class_names_file(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "digits"
    pixels, labels = write_idx(folder, 6, "train")
    (folder / "classes.txt").write_text("zero\none\ntwo\nthree\n")
    data = tmp_path / "data"
    assert run_cli(capsys, "extract", "--source", f"idx:{folder}", "--data-dir", data).code == 0
    _check_arrays(data, {f"train-{i:05d}": (pixels[i], int(labels[i])) for i in range(6)},
                  ["zero", "one", "two", "three"])


def test_bad_idx_files_give_named_errors(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "mnist"
    write_idx(folder, 4, "train", compress=False)
    images = folder / "train-images-idx3-ubyte"
    good = images.read_bytes()
    images.write_bytes(b"\x00\x00\x08\x01" + good[4:])
    magic = run_cli(capsys, "extract", "--source", f"idx:{folder}", "--data-dir", tmp_path / "d1")
    assert magic.code == 3 and "train-images-idx3-ubyte" in magic.err and "magic" in magic.err
    images.write_bytes(good[:-30])
    short = run_cli(capsys, "extract", "--source", f"idx:{folder}", "--data-dir", tmp_path / "d2")
    assert short.code == 3 and "ends early" in short.err
    images.write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8)))
    count = run_cli(capsys, "extract", "--source", f"idx:{folder}", "--data-dir", tmp_path / "d3")
    assert count.code == 3 and "5 images but" in count.err
    (folder / "train-labels-idx1-ubyte").unlink()
    alone = run_cli(capsys, "extract", "--source", f"idx:{folder}", "--data-dir", tmp_path / "d4")
    assert alone.code == 3 and "no labels file" in alone.err
    gz_folder = tmp_path / "gz"
    write_idx(gz_folder, 4, "train")
    broken = gz_folder / "train-images-idx3-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:-12])
    bad_gz = run_cli(capsys, "extract", "--source", f"idx:{gz_folder}", "--data-dir", tmp_path / "d5")
    assert bad_gz.code == 3 and "train-images-idx3-ubyte.gz" in bad_gz.err


def test_existing_sources_are_not_taken_for_image_sets(tmp_path: Path) -> None:
    assert parse_source("sample") is None
    assert parse_source("https://example.org/x.zip") is None
    assert parse_source("hf:owner/name") is None
    tsv = tmp_path / "tsv"
    tsv.mkdir()
    (tsv / "photos.tsv000").write_text("photo_id\n")
    (tsv / "cls").mkdir()
    Image.new("RGB", (4, 4)).save(tsv / "cls" / "a.png")
    assert parse_source(str(tsv)) is None  # an Unsplash-layout directory stays one


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@pytest.mark.skipif(not FASHION_MNIST.exists() and not os.environ.get("CI"),
                    reason="Debian package dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_real_fashion_mnist_subset(tmp_path: Path, capsys) -> None:
    """The first 400 test images of the real Fashion-MNIST (Debian dataset-fashion-mnist): converted,
    embedded by three encoders and evaluated; every encoder must beat chance by far."""
    source = Path("/usr/share/datasets/fashion-mnist")
    subset = tmp_path / "fashion-subset"
    subset.mkdir()
    with gzip.open(source / "t10k-images-idx3-ubyte.gz") as handle:
        handle.read(16)
        pixels = np.frombuffer(handle.read(400 * 28 * 28), np.uint8).reshape(400, 28, 28)
    with gzip.open(source / "t10k-labels-idx1-ubyte.gz") as handle:
        handle.read(8)
        labels = np.frombuffer(handle.read(400), np.uint8)
    (subset / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(pixels))
    (subset / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    data = tmp_path / "data"
    assert run_cli(capsys, "extract", "--source", str(subset), "--data-dir", data).code == 0
    for model in ("pixels", "color-histogram", "phash"):
        assert run_cli(capsys, "embed", "--model", model, "--data-dir", data).code == 0
    assert run_cli(capsys, "train", "pca", "--components", "32", "--data-dir", data).code == 0
    rows = {r["model"]: r for r in run_cli(capsys, "eval", "--format", "json", "--data-dir", data).json()}
    assert set(rows) == {"pixels", "color-histogram", "phash", "pca"}
    chance = rows["pixels"]["chance"]
    assert 0.05 < chance < 0.15  # ten classes
    assert rows["pixels"]["precision@5"] > 0.6 and rows["pca"]["precision@5"] > 0.6
    assert rows["phash"]["precision@5"] > 2 * chance
    photos = tables(data)["photos"].set_index("photo_id")
    with Image.open(photos.loc["t10k-00000", "photo_image_url"]) as first:
        assert np.array_equal(np.asarray(first), pixels[0])
