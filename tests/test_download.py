"""Resumable, verified downloads (pipeline/download.py) against the loopback fixture server.

The server really cuts connections, answers 503/404, honours Range/If-Range and answers 304 to
conditional requests, so every test here goes through real HTTP: `download()` directly, and the
same behaviour through `clipsql extract --source URL`. `CHUNK` is made small so a cut-off
transfer leaves whole blocks on disk and the resume offset is predictable.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

import pipeline.download
from pipeline.download import Downloaded, download
from pipeline.errors import SourceError
from tests.fixtures.server import FixtureServer
from tests.fixtures.unsplash import UNSPLASH_ZIP_NAME, UnsplashZip, make_dataset, write_zip
from tests.helpers import run_cli, table_counts

CHUNK = 1000


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline.download, "CHUNK", CHUNK)


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a fixture release zip (~17 KB): many CHUNKs, so cut points are meaningful."""
    data = write_zip(make_dataset(40), tmp_path_factory.mktemp("payload") / "release.zip").read_bytes()
    assert len(data) > 10 * CHUNK
    return data


@pytest.fixture
def served(fixture_server: FixtureServer, payload: bytes) -> tuple[str, str]:
    """(name, url) of `payload` registered under a name no other test uses."""
    name = f"dl-{uuid.uuid4().hex[:12]}.zip"
    return name, fixture_server.add_file(name, payload)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_complete(result: Downloaded, dest: Path, data: bytes) -> None:
    """The file is in place with exactly `data`, its metadata agrees, and no partial state is left."""
    assert dest.read_bytes() == data
    assert result.path == dest and result.size == len(data) and result.sha256 == sha256(data)
    meta = json.loads(dest.with_name(dest.name + ".json").read_text())
    assert meta["sha256"] == sha256(data) and meta["size"] == len(data) and meta["etag"] == result.etag
    assert not dest.with_name(dest.name + ".part").exists()
    assert not dest.with_name(dest.name + ".part.json").exists()


def write_part(dest: Path, data: bytes, validators: dict) -> None:
    """What an earlier run killed mid-transfer leaves behind: NAME.part and NAME.part.json."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.with_name(dest.name + ".part").write_bytes(data)
    dest.with_name(dest.name + ".part.json").write_text(json.dumps(validators))


def validators_of(url: str) -> dict:
    headers = requests.head(url, timeout=5).headers
    return {"etag": headers["ETag"], "last_modified": headers["Last-Modified"],
            "total": int(headers["Content-Length"])}


class RearmingSession(requests.Session):
    """A real session whose every GET is cut by the server after `n_bytes` (truncate_next is one-shot)."""

    def __init__(self, server: FixtureServer, name: str, n_bytes: int) -> None:
        super().__init__()
        self.server, self.name, self.n_bytes = server, name, n_bytes

    def get(self, *args, **kwargs):  # type: ignore[override]
        self.server.truncate_next(self.name, self.n_bytes)
        return super().get(*args, **kwargs)


# -- resuming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cut_at", "resume_from"),
    [(5500, 5000), (3000, 3000), (1000, 1000), (999, None), (0, None)],
    ids=["mid-block", "on-block-boundary", "first-block", "less-than-a-block", "nothing"],
)
def test_cut_download_resumes_from_the_last_whole_block(
    fixture_server: FixtureServer, served: tuple[str, str], payload: bytes, tmp_path: Path,
    cut_at: int, resume_from: int | None,
) -> None:
    name, url = served
    fixture_server.truncate_next(name, cut_at)
    dest = tmp_path / "downloads" / name
    result = download(url, dest, timeout=5, retries=2)
    assert_complete(result, dest, payload)
    assert fixture_server.requests[f"/data/{name}"] == 2
    if resume_from is None:  # not one whole block was written: start again without a Range
        assert fixture_server.range_requests == []
        assert result.resumed is False
    else:
        assert fixture_server.range_requests == [f"bytes={resume_from}-"]
        assert result.resumed is True
    assert result.bytes_fetched == len(payload)  # every byte exactly once across both requests
    assert result.not_modified is False


def test_part_left_by_a_killed_run_is_resumed(
    fixture_server: FixtureServer, served: tuple[str, str], payload: bytes, tmp_path: Path
) -> None:
    name, url = served
    dest = tmp_path / name
    have = 7 * CHUNK + 123
    write_part(dest, payload[:have], validators_of(url))
    fixture_server.reset()
    result = download(url, dest, timeout=5, retries=2)
    assert fixture_server.range_requests == [f"bytes={have}-"]
    assert fixture_server.requests[f"/data/{name}"] == 1
    assert result.resumed is True and result.bytes_fetched == len(payload) - have
    assert_complete(result, dest, payload)


def test_part_with_only_last_modified_is_resumed(
    fixture_server: FixtureServer, served: tuple[str, str], payload: bytes, tmp_path: Path
) -> None:
    name, url = served
    dest = tmp_path / name
    validators = validators_of(url) | {"etag": None}
    write_part(dest, payload[:4000], validators)
    fixture_server.reset()
    result = download(url, dest, timeout=5, retries=2)
    assert fixture_server.range_requests == ["bytes=4000-"]
    assert result.bytes_fetched == len(payload) - 4000
    assert_complete(result, dest, payload)


def test_part_without_its_validators_is_not_trusted(
    fixture_server: FixtureServer, served: tuple[str, str], payload: bytes, tmp_path: Path
) -> None:
    """A .part with no .part.json may belong to anything: it is downloaded again from zero."""
    name, url = served
    dest = tmp_path / name
    dest.with_name(name + ".part").write_bytes(b"junk" * 1000)
    result = download(url, dest, timeout=5, retries=2)
    assert fixture_server.range_requests == []
    assert result.resumed is False and result.bytes_fetched == len(payload)
    assert_complete(result, dest, payload)


def test_file_changed_between_attempts_restarts_from_zero(
    fixture_server: FixtureServer, served: tuple[str, str], payload: bytes, tmp_path: Path
) -> None:
    name, url = served
    dest = tmp_path / name
    fixture_server.truncate_next(name, 4500)
    with pytest.raises(SourceError, match=rf"download stopped at 4000 of {len(payload)} bytes"):
        download(url, dest, timeout=5, retries=0)
    assert dest.with_name(name + ".part").read_bytes() == payload[:4000]
    assert not dest.exists()

    changed = payload[::-1]  # same length, other bytes: only If-Range can tell
    fixture_server.add_file(name, changed)
    fixture_server.reset()
    result = download(url, dest, timeout=5, retries=2)
    assert fixture_server.range_requests == ["bytes=4000-"]  # asked to resume; If-Range said no
    assert fixture_server.requests[f"/data/{name}"] == 1
    assert result.resumed is False and result.bytes_fetched == len(changed)
    assert_complete(result, dest, changed)
    assert result.etag == requests.head(url, timeout=5).headers["ETag"]


def test_complete_part_is_not_downloaded_again(
    fixture_server: FixtureServer, served: tuple[str, str], payload: bytes, tmp_path: Path
) -> None:
    """A run killed after the last byte but before the rename: the server's 416 says the part is whole."""
    name, url = served
    dest = tmp_path / name
    write_part(dest, payload, validators_of(url))
    fixture_server.reset()
    result = download(url, dest, timeout=5, retries=2)
    assert_complete(result, dest, payload)
    assert result.bytes_fetched == 0
    assert fixture_server.range_requests == [f"bytes={len(payload)}-"]
    assert fixture_server.requests[f"/data/{name}"] == 1


# -- revalidation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("validator", ["etag", "last_modified"])
def test_complete_download_is_revalidated_not_fetched_again(
    fixture_server: FixtureServer, served: tuple[str, str], payload: bytes, tmp_path: Path, validator: str
) -> None:
    name, url = served
    dest = tmp_path / name
    first = download(url, dest, timeout=5, retries=2)
    assert_complete(first, dest, payload)
    assert first.not_modified is False and first.bytes_fetched == len(payload)
    meta_path = dest.with_name(name + ".json")
    if validator == "last_modified":  # a server without ETags: If-Modified-Since alone must do
        meta = json.loads(meta_path.read_text())
        meta["etag"] = None
        meta_path.write_text(json.dumps(meta))
    mtime = dest.stat().st_mtime_ns
    fixture_server.reset()

    again = download(url, dest, timeout=5, retries=2)
    assert again.not_modified is True and again.bytes_fetched == 0 and again.resumed is False
    assert again.sha256 == sha256(payload) and again.size == len(payload)
    assert fixture_server.requests[f"/data/{name}"] == 1 and fixture_server.range_requests == []
    assert dest.stat().st_mtime_ns == mtime and dest.read_bytes() == payload


def test_changed_file_on_the_server_is_fetched_again(
    fixture_server: FixtureServer, served: tuple[str, str], payload: bytes, tmp_path: Path
) -> None:
    name, url = served
    dest = tmp_path / name
    first = download(url, dest, timeout=5, retries=2)
    changed = payload + b"appended in a new release"
    fixture_server.add_file(name, changed)
    second = download(url, dest, timeout=5, retries=2)
    assert second.not_modified is False and second.bytes_fetched == len(changed)
    assert second.etag != first.etag
    assert_complete(second, dest, changed)
    third = download(url, dest, timeout=5, retries=2)  # and the new version is now the one revalidated
    assert third.not_modified is True and third.bytes_fetched == 0 and third.sha256 == sha256(changed)


# -- failures ---------------------------------------------------------------------------------------


def test_503_answers_are_retried(
    fixture_server: FixtureServer, served: tuple[str, str], payload: bytes, tmp_path: Path
) -> None:
    name, url = served
    fixture_server.fail_next(name, 503, times=2)
    dest = tmp_path / name
    result = download(url, dest, timeout=5, retries=2)
    assert fixture_server.requests[f"/data/{name}"] == 3
    assert_complete(result, dest, payload)


def test_503_past_the_retries_is_a_source_error(
    fixture_server: FixtureServer, served: tuple[str, str], tmp_path: Path
) -> None:
    name, url = served
    fixture_server.fail_next(name, 503, times=10)
    with pytest.raises(SourceError) as error:
        download(url, tmp_path / name, timeout=5, retries=1)
    assert url in str(error.value) and "503" in str(error.value)
    assert error.value.exit_code == 3
    assert fixture_server.requests[f"/data/{name}"] == 2
    assert not (tmp_path / name).exists()


def test_404_is_an_immediate_source_error(fixture_server: FixtureServer, tmp_path: Path) -> None:
    url = fixture_server.data_url(f"missing-{uuid.uuid4().hex[:8]}.zip")
    with pytest.raises(SourceError) as error:
        download(url, tmp_path / "missing.zip", timeout=5, retries=3)
    assert url in str(error.value) and "404" in str(error.value)
    assert sum(fixture_server.requests.values()) == 1  # a 404 is not retried
    assert list(tmp_path.iterdir()) == []


def test_download_truncated_past_the_retries_fails_and_resumes_later(
    fixture_server: FixtureServer, served: tuple[str, str], payload: bytes, tmp_path: Path
) -> None:
    name, url = served
    dest = tmp_path / name
    with pytest.raises(SourceError) as error:
        download(url, dest, timeout=5, retries=2, session=RearmingSession(fixture_server, name, 1500))
    message = str(error.value)
    # each of the 3 attempts keeps one more whole block: 1000, 2000, 3000
    assert url in message and f"stopped at 3000 of {len(payload)} bytes" in message and "run again to resume" in message
    assert fixture_server.range_requests == ["bytes=1000-", "bytes=2000-"]
    assert dest.with_name(name + ".part").read_bytes() == payload[:3000] and not dest.exists()

    fixture_server.reset()
    result = download(url, dest, timeout=5, retries=2)  # "run again to resume" does
    assert fixture_server.range_requests == ["bytes=3000-"]
    assert result.bytes_fetched == len(payload) - 3000
    assert_complete(result, dest, payload)


# -- through `clipsql extract` ----------------------------------------------------------------------


def test_extract_resumes_a_cut_download(capsys, fixture_server: FixtureServer, unsplash_zip: UnsplashZip,
                                        tmp_path: Path) -> None:
    data = unsplash_zip.path.read_bytes()
    fixture_server.truncate_next(UNSPLASH_ZIP_NAME, 6500)
    result = run_cli(capsys, "extract", "--source", unsplash_zip.url, "--data-dir", tmp_path)
    assert result.code == 0, result.err
    assert fixture_server.range_requests == ["bytes=6000-"]
    dest = tmp_path / "downloads" / UNSPLASH_ZIP_NAME
    assert sha256(dest.read_bytes()) == sha256(data)
    report = json.loads((tmp_path / "reports" / "extract-latest.json").read_text())
    assert report["details"]["download"] == {"bytes_fetched": len(data), "size": len(data), "resumed": True,
                                             "not_modified": False}
    for table, count in table_counts(unsplash_zip.tables).items():
        assert pq.read_metadata(tmp_path / "parquet" / f"{table}.parquet").num_rows == count, table


def test_extract_resumes_the_part_of_a_killed_run_and_then_only_revalidates(
    capsys, fixture_server: FixtureServer, unsplash_zip: UnsplashZip, tmp_path: Path
) -> None:
    data = unsplash_zip.path.read_bytes()
    dest = tmp_path / "downloads" / UNSPLASH_ZIP_NAME
    write_part(dest, data[:9000], validators_of(unsplash_zip.url))
    fixture_server.reset()
    first = run_cli(capsys, "extract", "--source", unsplash_zip.url, "--data-dir", tmp_path)
    assert first.code == 0, first.err
    assert fixture_server.range_requests == ["bytes=9000-"]
    assert dest.read_bytes() == data

    fixture_server.reset()
    mtime = dest.stat().st_mtime_ns
    second = run_cli(capsys, "extract", "--source", unsplash_zip.url, "--data-dir", tmp_path)
    assert second.code == 0, second.err
    assert fixture_server.requests[f"/data/{UNSPLASH_ZIP_NAME}"] == 1 and fixture_server.range_requests == []
    assert dest.stat().st_mtime_ns == mtime
    report = json.loads((tmp_path / "reports" / "extract-latest.json").read_text())
    assert report["details"]["unchanged"] is True and "unchanged" in " ".join(report["notes"])


def test_extract_retries_503_then_succeeds(capsys, fixture_server: FixtureServer, unsplash_zip: UnsplashZip,
                                           tmp_path: Path) -> None:
    fixture_server.fail_next(UNSPLASH_ZIP_NAME, 503, times=1)
    result = run_cli(capsys, "extract", "--source", unsplash_zip.url, "--data-dir", tmp_path)
    assert result.code == 0, result.err
    assert fixture_server.requests[f"/data/{UNSPLASH_ZIP_NAME}"] == 2
    assert pq.read_metadata(tmp_path / "parquet" / "photos.parquet").num_rows == len(unsplash_zip.tables["photos"])


def test_extract_of_a_missing_url_exits_3_naming_it(capsys, fixture_server: FixtureServer, tmp_path: Path) -> None:
    url = fixture_server.data_url("no-such-release.zip")
    result = run_cli(capsys, "extract", "--source", url, "--data-dir", tmp_path)
    assert result.code == 3
    assert result.err.startswith("clipsql extract: error:") and url in result.err and "404" in result.err
    assert "Traceback" not in result.err
    assert fixture_server.requests["/data/no-such-release.zip"] == 1
