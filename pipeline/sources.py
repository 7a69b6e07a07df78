"""Where the dataset comes from: a URL, a local zip, a directory, the bundled sample, `hf:`, or a
labelled image set (`folder:`, `cifar10:`, `idx:`, converted by pipeline.imagesets).

A source is resolved to the TSV files of each table (split files `.tsv000`, `.tsv001`, ...
in order) and, for directories, the folder that relative image paths are resolved against.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from .config import DataPaths
from .download import Downloaded, download
from .errors import SourceError
from .imagesets import convert, parse_source
from .resources import sample_dir
from .schemas import TABLES

_MEMBER = re.compile(r"^(?P<table>[a-z_]+)\.tsv(?P<part>\d*)$")


@dataclass
class TableFile:
    name: str  # shown in messages and rejects: zip member or file path
    read: Callable[[], bytes]


@dataclass
class TsvSource:
    description: str
    files: dict[str, list[TableFile]]
    origin_files: list[Path] = field(default_factory=list)  # what the version hash is computed from
    image_base: Path | None = None  # relative photo_image_url values are resolved against this
    download: Downloaded | None = None
    notes: list[str] = field(default_factory=list)
    convert_rejects: Counter = field(default_factory=Counter)  # image-set files that could not be used, by reason


def _group(names: list[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[tuple[int, str]]] = {t: [] for t in TABLES}
    for name in names:
        match = _MEMBER.match(PurePosixPath(name).name)
        if match and match["table"] in grouped:
            grouped[match["table"]].append((int(match["part"] or 0), name))
    return {table: [n for _, n in sorted(parts)] for table, parts in grouped.items()}


def _zip_source(path: Path, description: str) -> TsvSource:
    try:
        archive = zipfile.ZipFile(path)
        names = [info.filename for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{path}: not a readable zip archive ({exc}); delete it and download again") from None

    def reader(member: str) -> Callable[[], bytes]:
        def read() -> bytes:
            try:
                with zipfile.ZipFile(path) as handle:
                    return handle.read(member)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise SourceError(f"{path}: member {member} is corrupt ({exc})") from None

        return read

    grouped = _group(names)
    archive.close()
    return TsvSource(
        description=description,
        files={t: [TableFile(f"{path.name}:{m}", reader(m)) for m in members] for t, members in grouped.items()},
        origin_files=[path],
    )


def _dir_source(path: Path, description: str) -> TsvSource:
    names = [str(p.relative_to(path)) for p in path.iterdir() if p.is_file()]
    grouped = _group(names)
    return TsvSource(
        description=description,
        files={t: [TableFile(str(path / m), (path / m).read_bytes) for m in members] for t, members in grouped.items()},
        origin_files=[path / m for members in grouped.values() for m in members],
        image_base=path.resolve(),
    )


def source_version(source: TsvSource) -> str:
    """A content hash of what the source is made of (the zip, or the TSV files), streamed."""
    digest = hashlib.sha256()
    if source.image_base is not None:  # relative image paths resolve against it: moving it is a change
        digest.update(str(source.image_base).encode() + b"\0")
    for path in source.origin_files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):  # noqa: B023 - consumed before the next path
                digest.update(block)
    return digest.hexdigest()[:16]


def is_hf_source(source: str) -> bool:
    return source.startswith("hf:")


def resolve_source(source: str, paths: DataPaths, *, timeout: float, retries: int) -> TsvSource:
    """Turn the --source value into table files, downloading if it is a URL."""
    if is_hf_source(source):
        raise ValueError("hf: sources are read by pipeline.hfsource")
    image_set = parse_source(source)
    if image_set is not None:
        converted = convert(*image_set, paths)
        resolved = _dir_source(converted.directory, converted.description)
        resolved.image_base = None  # photo_image_url holds absolute paths already
        resolved.notes.extend(converted.notes)
        resolved.convert_rejects.update(converted.rejects)
    elif source == "sample":
        resolved = _dir_source(sample_dir(), "sample (bundled, openclipart-png)")
    elif source.startswith(("http://", "https://")):
        name = PurePosixPath(urlsplit(source).path).name or "dataset.zip"
        fetched = download(source, paths.downloads / name, timeout=timeout, retries=retries)
        resolved = _zip_source(fetched.path, source)
        resolved.download = fetched
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            resolved = _dir_source(path, str(path))
        elif path.is_file():
            resolved = _zip_source(path, str(path))
        else:
            raise SourceError(
                f"--source {source!r}: no such file or directory (expected an http(s) URL, a zip, a directory of "
                "TSV files, hf:OWNER/NAME, sample, folder:PATH, cifar10:PATH or idx:PATH)"
            )
    if not resolved.files.get("photos"):
        found = ", ".join(t for t, f in resolved.files.items() if f) or "no table files"
        raise SourceError(f"{resolved.description}: no photos.tsv000 found ({found}); is this an Unsplash Lite dataset?")
    for table, files in resolved.files.items():
        if not files:
            resolved.notes.append(f"{table}: no {table}.tsv* file in the source; the table will be empty")
    return resolved
