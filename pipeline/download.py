"""Resumable, verified downloads of the dataset zip.

A partial download is kept as `NAME.part` with the server's validators beside it; the next
attempt asks only for the missing bytes (`Range` + `If-Range`), and the file is renamed into
place only once its size matches what the server announced. A complete earlier download is
revalidated with a conditional GET, so an unchanged release costs one request and no bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from .config import redact
from .errors import SourceError
from .failpoints import failpoint
from .fsutil import atomic_write_text

CHUNK = 1 << 20


@dataclass
class Downloaded:
    path: Path
    url: str
    size: int
    sha256: str
    etag: str | None
    last_modified: str | None
    bytes_fetched: int
    resumed: bool
    not_modified: bool


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, *, timeout: float = 30.0, retries: int = 3, session: requests.Session | None = None) -> Downloaded:
    """Download `url` to `dest`, resuming a partial file and skipping an unchanged one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    session = session or requests.Session()
    part, part_meta = dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")
    previous = json.loads(_meta_path(dest).read_text()) if dest.exists() and _meta_path(dest).exists() else None

    if previous and not part.exists():
        headers = {}
        if previous.get("etag"):
            headers["If-None-Match"] = previous["etag"]
        if previous.get("last_modified"):
            headers["If-Modified-Since"] = previous["last_modified"]
        if headers:
            try:
                response = session.get(url, headers=headers, stream=True, timeout=timeout)
            except requests.RequestException as exc:
                raise SourceError(f"cannot reach {url}: {exc}") from None
            with response:
                if response.status_code == 304:
                    return Downloaded(dest, url, dest.stat().st_size, previous["sha256"], previous.get("etag"),
                                      previous.get("last_modified"), 0, False, True)

    attempt, fetched, resumed = 0, 0, False
    while True:
        attempt += 1
        validators = json.loads(part_meta.read_text()) if part.exists() and part_meta.exists() else {}
        have = part.stat().st_size if part.exists() and validators else 0
        headers = {}
        if have:
            headers["Range"] = f"bytes={have}-"
            if validators.get("etag") or validators.get("last_modified"):
                headers["If-Range"] = validators.get("etag") or validators["last_modified"]
        try:
            response = session.get(url, headers=headers, stream=True, timeout=timeout)
        except requests.RequestException as exc:
            if attempt <= retries:
                time.sleep(min(2 ** attempt * 0.25, 5))
                continue
            raise SourceError(f"cannot reach {url}: {exc}") from None
        with response:
            if response.status_code == 416 and have:
                unsatisfied = response.headers.get("Content-Range", "")
                total = int(unsatisfied.rsplit("/", 1)[1]) if unsatisfied.rsplit("/", 1)[-1].isdigit() else None
                if total == have:  # the previous run got every byte and died before the rename
                    etag, last_modified = validators.get("etag"), validators.get("last_modified")
                    resumed = True
                    break
                part.unlink()  # our partial file is not a prefix of what the server has now
                continue
            if response.status_code >= 400:
                if response.status_code >= 500 and attempt <= retries:
                    time.sleep(min(2 ** attempt * 0.25, 5))
                    continue
                raise SourceError(f"{url}: the server answered HTTP {response.status_code} {response.reason}")
            if response.status_code == 206:
                content_range = response.headers.get("Content-Range", "")
                start = int(content_range.split(" ")[1].split("-")[0]) if "-" in content_range else -1
                if start != have:
                    raise SourceError(f"{url}: asked for bytes from {have}, server sent {content_range!r}")
                total = int(content_range.rsplit("/", 1)[1]) if "/" in content_range and not content_range.endswith("*") else None
                mode, resumed = "ab", True
            else:
                have, mode = 0, "wb"
                total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
            atomic_write_text(part_meta, json.dumps({
                "etag": response.headers.get("ETag"), "last_modified": response.headers.get("Last-Modified"), "total": total,
            }))
            written = have
            try:
                with part.open(mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                  desc=f"download {dest.name}", disable=None, leave=False) as bar:
                    for block in response.iter_content(CHUNK):
                        out.write(block)
                        written += len(block)
                        fetched += len(block)
                        bar.update(len(block))
                        failpoint("download.block")
                    out.flush()
                    os.fsync(out.fileno())
            except (requests.RequestException, ConnectionError) as exc:
                if attempt <= retries:
                    continue
                of_total = f" of {total}" if total is not None else ""
                raise SourceError(
                    f"{url}: download stopped at {written}{of_total} bytes ({type(exc).__name__}); run again to resume"
                ) from None
            if total is not None and written != total:
                if attempt <= retries:
                    continue
                raise SourceError(f"{url}: download stopped at {written} of {total} bytes; run again to resume")
            etag, last_modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
            if resumed and validators:
                etag, last_modified = etag or validators.get("etag"), last_modified or validators.get("last_modified")
        break

    os.replace(part, dest)
    result = Downloaded(dest, url, dest.stat().st_size, _sha256(dest), etag, last_modified, fetched, resumed, False)
    meta = asdict(result)
    meta["path"] = str(dest)
    meta["url"] = redact(url)
    atomic_write_text(_meta_path(dest), json.dumps(meta, indent=2))
    part_meta.unlink(missing_ok=True)
    return result
