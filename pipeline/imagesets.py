"""Labelled image sets as sources: class folders, CIFAR-10 pickles and MNIST-style idx files.

Each is converted into the Unsplash Lite layout the rest of the pipeline already reads, under
`<data-dir>/sources/<kind>-<name>-<hash>/`:

- photos: one row per image; `photo_id` is stable per image, `photo_image_url` the absolute
  path of the image file (array-based sets are written out as PNG files next to the tables);
- keywords: the class label, plus words from sub-folder and file names where there are any;
- collections: one per class, `collection_id` = `class:<label>`, title = the label (a readable
  name where the set has one: Tiny-ImageNet's words.txt, CIFAR's batches.meta);
- conversions and colors: empty.

`--source folder:PATH`, `cifar10:PATH`, `idx:PATH`, or just `PATH` when the layout is
unambiguous. Folders are listed by name only and images opened one at a time (header only);
array sets are read one batch at a time; nothing is loaded whole. The conversion is cached
by a signature of the input files (names, sizes, times), so re-running extract on an
unchanged set costs a directory listing. Images that cannot be used are counted and listed in
`<data-dir>/rejects/convert-<kind>.csv`; files that are not what they claim to be (corrupt
pickles, idx files with the wrong magic number) stop the conversion with a named error.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import pickle
import re
import shutil
import struct
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .config import DataPaths
from .errors import SourceError
from .fsutil import atomic_write_json, read_json
from .images import MAX_PIXELS
from .schemas import TABLE_SCHEMAS

KINDS = ("folder", "cifar10", "idx")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
UNSUPPORTED_IMAGES = {".svg", ".svgz", ".eps", ".ai", ".psd", ".xcf", ".heic", ".avif"}  # counted as rejects
CLASS_PREFIX = "class:"
MARKER = "_converted.json"
CONVERTER_VERSION = 1
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
IDX_IMAGES = re.compile(r"^(?P<prefix>.+?)[-_.]images[-_.]idx3[-_.]ubyte(\.gz)?$")
_WORD = re.compile(r"[a-z]{3,}")
_LOCALE_LINE = re.compile(r"^[a-z]{2,3}(_[A-Za-z]{2})?(@\w+)?\.utf8=")


@dataclass
class ConvertedSet:
    directory: Path
    description: str
    notes: list[str] = field(default_factory=list)
    rejects: Counter = field(default_factory=Counter)


# -- which sources are image sets ---------------------------------------------------------------------


def _has_tables(path: Path) -> bool:
    return any(p.name.startswith("photos.tsv") for p in path.iterdir())


def _idx_pairs(path: Path) -> list[tuple[str, Path, Path]]:
    """(prefix, images file, labels file) for each idx images file in a directory or given directly."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    pairs = []
    for images in files:
        match = IDX_IMAGES.match(images.name)
        if not match:
            continue
        labels = images.with_name(images.name.replace("images", "labels", 1).replace("idx3", "idx1", 1))
        if not labels.exists():
            raise SourceError(f"{images}: no labels file {labels.name} next to it")
        pairs.append((match["prefix"], images, labels))
    return pairs


def _cifar_dir(path: Path) -> Path | None:
    for candidate in (path, path / "cifar-10-batches-py"):
        if candidate.is_dir() and any((candidate / b).exists() for b in CIFAR_BATCHES):
            return candidate
    return None


def detect(path: Path) -> str | None:
    """The image-set kind of `path` when its layout says so unambiguously, else None."""
    if path.is_file():
        if IDX_IMAGES.match(path.name):
            return "idx"
        if path.name.endswith((".tar.gz", ".tgz")) and "cifar" in path.name.lower():
            return "cifar10"
        return None
    if not path.is_dir() or _has_tables(path):
        return None
    if _cifar_dir(path):
        return "cifar10"
    if _idx_pairs(path):
        return "idx"
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for sub in subdirs:
        for _, _, names in os.walk(sub):
            if any(Path(n).suffix.lower() in IMAGE_EXTENSIONS for n in names):
                return "folder"
    return None


def parse_source(source: str) -> tuple[str, Path] | None:
    """`kind:PATH` for an image-set kind, or a path whose layout is one; None for anything else."""
    kind, sep, rest = source.partition(":")
    if sep and kind in KINDS:
        path = Path(rest).expanduser()
        if not path.exists():
            raise SourceError(f"--source {source!r}: {path} does not exist")
        return kind, path
    if "://" in source or source.startswith("hf:") or source == "sample":
        return None
    path = Path(source).expanduser()
    found = detect(path) if path.exists() else None
    return (found, path) if found else None


# -- writing the Unsplash Lite layout --------------------------------------------------------------


class _TableWriter:
    """TSV files in the Unsplash Lite format, written row by row as images are visited."""

    def __init__(self, directory: Path) -> None:
        self.handles: dict[str, IO[str]] = {}
        self.writers: dict[str, Any] = {}
        self.columns = {name: schema.names for name, schema in TABLE_SCHEMAS.items()}
        for table, columns in self.columns.items():
            handle = (directory / f"{table}.tsv000").open("w", encoding="utf-8", newline="")
            writer = csv.writer(handle, delimiter="\t", quotechar='"', quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            writer.writerow(columns)
            self.handles[table], self.writers[table] = handle, writer
        self.rows: Counter = Counter()
        self.labels: set[str] = set()

    def add(self, table: str, **values: Any) -> None:
        self.writers[table].writerow(["" if values.get(c) is None else values[c] for c in self.columns[table]])
        self.rows[table] += 1

    def photo(self, photo_id: str, image_path: Path, label: str | None, title: str | None, description: str,
              width: int | None, height: int | None, keywords: list[str]) -> None:
        self.add("photos", photo_id=photo_id, photo_image_url=str(image_path), photo_width=width, photo_height=height,
                 photo_aspect_ratio=round(width / height, 4) if width and height else None,
                 photo_description=description[:2000])
        seen = set()
        for keyword in keywords:
            if keyword and keyword not in seen:
                seen.add(keyword)
                self.add("keywords", photo_id=photo_id, keyword=keyword)
        if label:
            self.labels.add(label)
            self.add("collections", photo_id=photo_id, collection_id=CLASS_PREFIX + label, collection_title=title or label)

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def _words(*texts: str) -> list[str]:
    words: list[str] = []
    for text in texts:
        words.extend(_WORD.findall(text.lower()))
    return words


def _output_dir(paths: DataPaths, kind: str, path: Path) -> Path:
    resolved = str(path.resolve())
    name = re.sub(r"[^a-z0-9]+", "-", path.resolve().name.lower()).strip("-")[:40] or kind
    return paths.root / "sources" / f"{kind}-{name}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


def _file_signature(files: list[Path]) -> list[Any]:
    signature: list[Any] = []
    for file in files:
        stat = file.stat()
        signature.append([str(file), stat.st_size, stat.st_mtime_ns])
    return signature


def _convert(kind: str, path: Path, paths: DataPaths, signature: Any, build) -> ConvertedSet:
    """Reuse the conversion if its signature matches, else build it in a fresh directory and swap it in."""
    out = _output_dir(paths, kind, path)
    digest = hashlib.sha256(repr([CONVERTER_VERSION, signature]).encode()).hexdigest()
    description = f"{kind}:{path}"
    marker = read_json(out / MARKER, {}) or {}
    if marker.get("signature") == digest and (out / "photos.tsv000").exists():
        return ConvertedSet(out, description, [f"{description}: conversion unchanged, reused {out}"],
                            Counter(marker.get("rejects", {})))
    staging = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    writer = _TableWriter(staging)
    rejected: list[tuple[str, str, str]] = []
    try:
        notes = build(writer, staging, out, rejected)
    finally:
        writer.close()
    counts = Counter(reason for _, reason, _ in rejected)
    reject_path = paths.rejects / f"convert-{kind}.csv"
    if rejected:
        reject_path.parent.mkdir(parents=True, exist_ok=True)
        with reject_path.open("w", encoding="utf-8", newline="") as handle:
            csv_writer = csv.writer(handle)
            csv_writer.writerow(["file", "reason", "detail"])
            csv_writer.writerows(rejected)
        notes.append(f"{sum(counts.values())} file(s) not usable, listed in {reject_path}")
    else:
        reject_path.unlink(missing_ok=True)
    atomic_write_json(staging / MARKER, {"signature": digest, "source": description, "rows": dict(writer.rows),
                                         "rejects": dict(counts)})
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    notes.insert(0, f"{description}: converted {writer.rows['photos']} images of {len(writer.labels)} classes "
                    f"into {out}")
    return ConvertedSet(out, description, notes, counts)


# -- class folders ------------------------------------------------------------------------------------


def _caption(image: Path) -> str | None:
    """The first line of a sidecar `<stem>.txt` that is not a translation (`xx.utf8=...`)."""
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        return None
    try:
        text = sidecar.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        line = line.strip()
        if line and not _LOCALE_LINE.match(line):
            return line[:2000]
    return None


def _class_titles(root: Path) -> dict[str, str]:
    """Tiny-ImageNet names its class folders by WordNet id and maps them in words.txt."""
    for candidate in (root / "words.txt", root.parent / "words.txt"):
        if candidate.is_file():
            titles = {}
            for line in candidate.read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, title = line.partition("\t")
                if title:
                    titles[key.strip()] = title.strip()
            return titles
    return {}


def _folder_listing(root: Path) -> tuple[list[tuple[str | None, list[Path]]], list[Path]]:
    """Images per class folder (sorted, recursive), root-level images as class None, and unsupported files."""
    classes: list[tuple[str | None, list[Path]]] = []
    unsupported: list[Path] = []
    top_images: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            suffix = entry.suffix.lower()
            if suffix in IMAGE_EXTENSIONS:
                top_images.append(entry)
            elif suffix in UNSUPPORTED_IMAGES:
                unsupported.append(entry)
            continue
        files: list[Path] = []
        for directory, dirnames, names in os.walk(entry, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(names):
                suffix = Path(name).suffix.lower()
                if suffix in IMAGE_EXTENSIONS:
                    files.append(Path(directory) / name)
                elif suffix in UNSUPPORTED_IMAGES:
                    unsupported.append(Path(directory) / name)
        if files:
            classes.append((entry.name, files))
    if top_images:
        classes.append((None, top_images))
    return classes, unsupported


def _round_robin(classes: list[tuple[str | None, list[Path]]]) -> Iterator[tuple[str | None, Path]]:
    """One image of each class in turn, so that `--limit N` keeps every class about equally."""
    longest = max((len(files) for _, files in classes), default=0)
    for i in range(longest):
        for label, files in classes:
            if i < len(files):
                yield label, files[i]


def _convert_folder(path: Path, paths: DataPaths) -> ConvertedSet:
    if not path.is_dir():
        raise SourceError(f"folder:{path}: not a directory")
    classes, unsupported = _folder_listing(path)
    total = sum(len(files) for _, files in classes)
    if total == 0:
        raise SourceError(f"folder:{path}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it or its "
                          "sub-folders")
    signature = []
    for _, files in classes:
        for file in files:
            try:
                stat = file.stat()
                signature.append((str(file), stat.st_size, stat.st_mtime_ns))
            except OSError:
                signature.append((str(file), -1, -1))
    signature.append(sorted(str(p) for p in unsupported))
    titles = _class_titles(path)

    def build(writer: _TableWriter, staging: Path, out: Path, rejected: list) -> list[str]:
        for file in unsupported:
            rejected.append((str(file), "unsupported_format", f"{file.suffix.lower()} images cannot be decoded"))
        seen: dict[str, Path] = {}
        for label, file in tqdm(_round_robin(classes), total=total, unit="img", desc="folder", disable=None):
            real = os.path.realpath(file)
            if real in seen:
                rejected.append((str(file), "duplicate", f"the same file as {seen[real]}"))
                continue
            seen[real] = file
            try:
                with Image.open(file) as image:
                    width, height = image.size
            except Image.DecompressionBombError:
                rejected.append((str(file), "decompression_bomb", "too many pixels"))
                continue
            except UnidentifiedImageError:
                rejected.append((str(file), "not_an_image", "the file is not an image PIL can read"))
                continue
            except OSError as exc:
                rejected.append((str(file), "unreadable", str(exc)[:200]))
                continue
            if width * height > MAX_PIXELS or width == 0 or height == 0:
                rejected.append((str(file), "bad_size", f"{width}x{height} pixels"))
                continue
            relative = file.relative_to(path)
            photo_id = hashlib.sha1(relative.as_posix().encode()).hexdigest()[:12]
            title = titles.get(label, label) if label else None
            caption = _caption(file)
            folders = [part for part in relative.parts[1:-1] if part.lower() not in ("images", "img", "imgs")]
            keywords = ([label.lower()] if label else []) + _words(title or "", *folders, file.stem)
            writer.photo(photo_id, file.resolve(), label, title, caption or f"{(title or '').split(',')[0]} "
                         f"{' '.join(_words(file.stem))}".strip(), width, height, keywords)
        return []

    return _convert("folder", path, paths, signature, build)


# -- CIFAR-10 python batches -----------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds (dicts, lists, bytes, numpy arrays): a pickle is code,
    and a downloaded file must not be able to run any."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2: text back to bytes, nothing else
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def _unpickle(data: bytes, name: str) -> dict:
    try:
        loaded = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # UnpicklingError, EOFError, ValueError...: all mean "not a CIFAR batch"
        raise SourceError(f"{name}: not a readable CIFAR-10 python batch ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(loaded, dict):
        raise SourceError(f"{name}: expected a dict in the pickle, found {type(loaded).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in loaded.items()}


class _CifarFiles:
    """The batch files of a directory or of the published tar.gz, read one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar_members: dict[str, str] = {}
        if path.is_file():
            try:
                with tarfile.open(path, "r:*") as archive:
                    for member in archive.getmembers():
                        base = PurePath(member.name).name
                        if member.isfile() and (base in CIFAR_BATCHES or base == "batches.meta"):
                            self.tar_members[base] = member.name
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise SourceError(f"cifar10:{path}: not a readable tar archive ({exc})") from None
            self.names = [b for b in CIFAR_BATCHES if b in self.tar_members]
            self.has_meta = "batches.meta" in self.tar_members
        else:
            directory = _cifar_dir(path)
            if directory is None:
                raise SourceError(f"cifar10:{path}: no data_batch_1..5 or test_batch files (the CIFAR-10 python "
                                  "version, cifar-10-batches-py)")
            self.directory = directory
            self.names = [b for b in CIFAR_BATCHES if (directory / b).is_file()]
            self.has_meta = (directory / "batches.meta").is_file()

    def files(self) -> list[Path]:
        if self.tar_members:
            return [self.path]
        return [self.directory / n for n in [*self.names, *(["batches.meta"] if self.has_meta else [])]]

    def read(self, name: str) -> tuple[bytes, str]:
        if self.tar_members:
            try:
                with tarfile.open(self.path, "r:*") as archive:
                    handle = archive.extractfile(self.tar_members[name])
                    return (handle.read() if handle else b""), f"{self.path}:{self.tar_members[name]}"
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise SourceError(f"{self.path}: member {name} is corrupt ({exc})") from None
        return (self.directory / name).read_bytes(), str(self.directory / name)


def _convert_cifar(path: Path, paths: DataPaths) -> ConvertedSet:
    files = _CifarFiles(path)
    if not files.names:
        raise SourceError(f"cifar10:{path}: no data_batch_1..5 or test_batch in the archive")

    def build(writer: _TableWriter, staging: Path, out: Path, rejected: list) -> list[str]:
        notes: list[str] = []
        names: list[str] = []
        if files.has_meta:
            data, where = files.read("batches.meta")
            meta = _unpickle(data, where)
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
        if not names:
            notes.append("no batches.meta label names: classes are named by their numbers")
        for batch_name in files.names:
            data, where = files.read(batch_name)
            batch = _unpickle(data, where)
            pixels, labels = batch.get("data"), batch.get("labels")
            if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.shape[1] != 3072 or labels is None \
                    or len(labels) != len(pixels):
                raise SourceError(f"{where}: expected data (N x 3072 uint8) and N labels, found "
                                  f"{getattr(pixels, 'shape', type(pixels).__name__)} and "
                                  f"{len(labels) if labels is not None else 'no'} labels")
            filenames = batch.get("filenames") or [b""] * len(pixels)
            tag = "test" if batch_name == "test_batch" else f"train{batch_name.rsplit('_', 1)[1]}"
            images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8)
            for i in tqdm(range(len(images)), unit="img", desc=f"cifar10 {tag}", disable=None):
                label_number = int(labels[i])
                label = names[label_number] if 0 <= label_number < len(names) else str(label_number)
                photo_id = f"cifar10-{tag}-{i:05d}"
                file_name = filenames[i].decode("utf-8", "replace") if isinstance(filenames[i], bytes) else str(filenames[i])
                target = out / "images" / f"{photo_id}.png"
                Image.fromarray(images[i]).save(staging / "images" / target.name, compress_level=1)
                writer.photo(photo_id, target, label, label, f"{label} ({file_name})" if file_name else label, 32, 32,
                             [label.lower(), *_words(Path(file_name).stem)])
        return notes

    return _convert("cifar10", path, paths, _file_signature(files.files()), build)


# -- MNIST-style idx files -----------------------------------------------------------------------------


def _open_idx(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _idx_header(handle: IO[bytes], path: Path, ndim: int) -> tuple[int, ...]:
    try:
        head = handle.read(4)
        if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08 or head[3] != ndim:
            kind = "images (magic 0x00000803)" if ndim == 3 else "labels (magic 0x00000801)"
            raise SourceError(f"{path}: not an idx file of unsigned-byte {kind}; its first bytes are {head.hex()}")
        dims = handle.read(4 * ndim)
        if len(dims) != 4 * ndim:
            raise SourceError(f"{path}: the idx header is truncated")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SourceError(f"{path}: unreadable ({exc})") from None
    return struct.unpack(f">{ndim}I", dims)


def _read_exact(handle: IO[bytes], size: int, path: Path, what: str) -> bytes:
    try:
        data = handle.read(size)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SourceError(f"{path}: unreadable ({exc})") from None
    if len(data) != size:
        raise SourceError(f"{path}: ends early, in {what}")
    return data


def _idx_class_names(path: Path) -> list[str]:
    directory = path if path.is_dir() else path.parent
    for name in ("classes.txt", "labels.txt"):
        if (directory / name).is_file():
            return [line.strip() for line in (directory / name).read_text().splitlines() if line.strip()]
    if "fashion" in str(path.resolve()).lower():
        return list(FASHION_MNIST_CLASSES)
    return []


def _convert_idx(path: Path, paths: DataPaths) -> ConvertedSet:
    pairs = _idx_pairs(path)
    if not pairs:
        raise SourceError(f"idx:{path}: no *-images-idx3-ubyte(.gz) file with its *-labels-idx1-ubyte(.gz)")
    class_names = _idx_class_names(path)

    def build(writer: _TableWriter, staging: Path, out: Path, rejected: list) -> list[str]:
        notes = [] if class_names else ["no class names (classes.txt): classes are named by their numbers"]
        for prefix, images_path, labels_path in pairs:
            with _open_idx(images_path) as images, _open_idx(labels_path) as labels:
                count, rows, cols = _idx_header(images, images_path, 3)
                (label_count,) = _idx_header(labels, labels_path, 1)
                if count != label_count:
                    raise SourceError(f"{images_path}: {count} images but {labels_path.name} has {label_count} labels")
                tag = re.sub(r"[^a-z0-9]+", "-", prefix.lower()).strip("-") or "idx"
                with tqdm(total=count, unit="img", desc=f"idx {tag}", disable=None) as bar:
                    for start in range(0, count, 5000):
                        n = min(5000, count - start)
                        what = f"images {start}-{start + n - 1} of {count}"
                        block = np.frombuffer(_read_exact(images, n * rows * cols, images_path, what), np.uint8)
                        block = block.reshape(n, rows, cols)
                        numbers = np.frombuffer(_read_exact(labels, n, labels_path, what), np.uint8)
                        for i in range(n):
                            number = int(numbers[i])
                            label = class_names[number] if number < len(class_names) else str(number)
                            photo_id = f"{tag}-{start + i:05d}"
                            target = out / "images" / f"{photo_id}.png"
                            Image.fromarray(block[i]).save(staging / "images" / target.name,
                                                                     compress_level=1)
                            writer.photo(photo_id, target, label, label, label, cols, rows,
                                         [label.lower(), *_words(label)])
                        bar.update(n)
        return notes

    files = [f for _, images, labels in pairs for f in (images, labels)]
    return _convert("idx", path, paths, [_file_signature(files), class_names], build)


def convert(kind: str, path: Path, paths: DataPaths) -> ConvertedSet:
    if kind == "folder":
        return _convert_folder(path, paths)
    if kind == "cifar10":
        return _convert_cifar(path, paths)
    if kind == "idx":
        return _convert_idx(path, paths)
    raise SourceError(f"unknown image-set kind {kind!r}; expected one of {', '.join(KINDS)}")
