"""Stage 1, extract, end to end through `clipsql extract` (and `clipsql run` for `hf:` sources).

Every source kind (zip over HTTP from the loopback server, local zip, directory of split TSVs,
HuggingFace-style Parquet with precomputed vectors) is read by the real code and the Parquet it
writes is compared with the fixture's own tables, converted to the documented types here,
independently of the pipeline. Bad rows are built byte by byte so their line numbers are known.
"""

from __future__ import annotations

import json
import shutil
import socket
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import DEFAULT_MODEL
from pipeline.schemas import TABLE_SCHEMAS
from pipeline.store import EmbeddingStore
from tests.fixtures.server import FixtureServer
from tests.fixtures.unsplash import (
    HOSTILE_STRING,
    SPECIAL_DESCRIPTIONS,
    SPECIAL_KEYWORDS,
    TABLE_COLUMNS,
    UnsplashZip,
    make_dataset,
    table_files,
    tsv_bytes,
    write_tsv_dir,
)
from tests.helpers import CliResult, database, exact_knn, run_cli, table_counts

TABLES = list(TABLE_COLUMNS)

# The documented types of the typed columns (Unsplash Lite DOCS); every other column is text.
TYPED_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "photos": {
        "photo_submitted_at": pa.timestamp("us"), "photo_featured": pa.bool_(), "photo_width": pa.int32(),
        "photo_height": pa.int32(), "photo_aspect_ratio": pa.float32(), "exif_iso": pa.int32(),
        "photo_location_latitude": pa.float64(), "photo_location_longitude": pa.float64(),
        "stats_views": pa.int64(), "stats_downloads": pa.int64(), "ai_primary_landmark_latitude": pa.float64(),
        "ai_primary_landmark_longitude": pa.float64(),
    },
    "keywords": {"ai_service_1_confidence": pa.float64(), "ai_service_2_confidence": pa.float64(),
                 "suggested_by_user": pa.bool_()},
    "collections": {"photo_collected_at": pa.timestamp("us")},
    "conversions": {"converted_at": pa.timestamp("us")},
    "colors": {"red": pa.int32(), "green": pa.int32(), "blue": pa.int32(), "coverage": pa.float64(),
               "score": pa.float64()},
}


# -- helpers ----------------------------------------------------------------------------------------


def extract(capsys, source: str | Path, data_dir: Path, *extra: str) -> CliResult:
    return run_cli(capsys, "extract", "--source", source, "--data-dir", data_dir, *extra)


def parquet(data_dir: Path, table: str) -> pa.Table:
    return pq.read_table(data_dir / "parquet" / f"{table}.parquet")


def report(data_dir: Path, stage: str = "extract") -> dict:
    return json.loads((data_dir / "reports" / f"{stage}-latest.json").read_text())


def rejects(data_dir: Path, table: str) -> pd.DataFrame:
    return pd.read_csv(data_dir / "rejects" / f"extract-{table}.csv", dtype={"line": "Int64"},
                       keep_default_na=False)


def typed_value(text: str, kind: pa.DataType | None):
    """A TSV string as the documented type: empty is null for everything but text."""
    if kind is None:
        return text
    if text == "":
        return None
    if pa.types.is_timestamp(kind):
        return datetime.fromisoformat(text)
    if pa.types.is_boolean(kind):
        return {"t": True, "f": False}[text]
    if pa.types.is_integer(kind):
        return int(text)
    if kind == pa.float32():
        return float(np.float32(text))
    return float(text)


def expected_rows(frame: pd.DataFrame, table: str) -> list[dict]:
    kinds = TYPED_COLUMNS[table]
    return [{column: typed_value(value, kinds.get(column)) for column, value in zip(frame.columns, row, strict=True)}
            for row in frame.itertuples(index=False, name=None)]


def assert_table_equals(data_dir: Path, table: str, frame: pd.DataFrame) -> None:
    actual = parquet(data_dir, table)
    assert actual.schema.names == TABLE_COLUMNS[table]
    for column in actual.schema.names:
        assert actual.schema.field(column).type == TYPED_COLUMNS[table].get(column, pa.string()), (table, column)
    assert actual.to_pylist() == expected_rows(frame, table), table


def assert_report_adds_up(data: dict) -> None:
    assert data["in"] == data["out"] + data["skipped"] + data["rejected"], data
    tables = data["details"]["tables"]
    for table, stats in tables.items():
        assert stats["in"] == stats["out"] + stats["skipped"] + stats["rejected"], (table, stats)
    for key in ("in", "out", "skipped", "rejected"):
        assert data[key] == sum(stats[key] for stats in tables.values()), key


def record(frame: pd.DataFrame, index: int | None = None, **changes: str) -> bytes:
    """One data row as the release writes it (quoted where needed, ends with a newline)."""
    row = frame.iloc[index if index is not None else 0].copy()
    for column, value in changes.items():
        row[column] = value
    return tsv_bytes(pd.DataFrame([row], columns=frame.columns)).split(b"\n", 1)[1]


class TsvBuilder:
    """Bytes of one TSV file, remembering the line each record starts on."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.data = tsv_bytes(frame.iloc[0:0])  # the header row

    def add(self, data: bytes) -> int:
        line = self.data.count(b"\n") + 1
        self.data += data
        return line

    def add_rows(self, frame: pd.DataFrame) -> None:
        self.data += tsv_bytes(frame).split(b"\n", 1)[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def small() -> dict[str, pd.DataFrame]:
    """Twelve photos: covers the special descriptions (photo 5's spans two lines) and keywords."""
    return make_dataset(12, seed=7)


# -- sources ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http", "zip", "dir"])
def test_every_source_kind_gives_the_fixture_tables_typed(capsys, unsplash_zip: UnsplashZip, tmp_path: Path,
                                                          kind: str) -> None:
    if kind == "dir":
        source: str | Path = tmp_path / "unzipped"
        write_tsv_dir(unsplash_zip.tables, source, split_conversions=3)
    else:
        source = unsplash_zip.url if kind == "http" else unsplash_zip.path
    data_dir = tmp_path / "data"
    result = extract(capsys, source, data_dir)
    assert result.code == 0, result.err
    assert "extract:" in result.err and "Traceback" not in result.err
    for table in TABLES:
        assert_table_equals(data_dir, table, unsplash_zip.tables[table])
    data = report(data_dir)
    assert_report_adds_up(data)
    counts = table_counts(unsplash_zip.tables)
    assert {t: s["out"] for t, s in data["details"]["tables"].items()} == counts
    assert data["out"] == data["in"] == sum(counts.values()) and data["rejected"] == data["skipped"] == 0
    assert not (data_dir / "rejects").exists() or list((data_dir / "rejects").iterdir()) == []

    photos = parquet(data_dir, "photos")
    assert photos["photo_description"].to_pylist()[: len(SPECIAL_DESCRIPTIONS)] == SPECIAL_DESCRIPTIONS
    assert HOSTILE_STRING in photos["photo_description"].to_pylist()
    assert set(SPECIAL_KEYWORDS) <= set(parquet(data_dir, "keywords")["keyword"].to_pylist())
    assert photos["photo_id"].to_pylist()[0].startswith("-")
    # empty numeric fields are nulls, not zeros
    empty_iso = int((unsplash_zip.tables["photos"]["exif_iso"] == "").sum())
    assert empty_iso > 0 and photos["exif_iso"].null_count == empty_iso
    empty_score = int((unsplash_zip.tables["colors"]["score"] == "").sum())
    assert parquet(data_dir, "colors")["score"].null_count == empty_score


def test_directory_source_resolves_relative_image_paths(capsys, small, tmp_path: Path) -> None:
    tables = {name: frame.copy() for name, frame in small.items()}
    photos = tables["photos"]
    photos["photo_image_url"] = "images/" + photos["photo_id"] + ".jpg"
    photos.loc[0, "photo_image_url"] = "https://images.example.com/absolute.jpg"
    source = tmp_path / "release"
    write_tsv_dir(tables, source)
    result = extract(capsys, source, tmp_path / "data")
    assert result.code == 0, result.err
    urls = parquet(tmp_path / "data", "photos")["photo_image_url"].to_pylist()
    assert urls[0] == "https://images.example.com/absolute.jpg"
    base = source.resolve().as_uri()
    assert urls[1:] == [f"{base}/images/{pid}.jpg" for pid in photos["photo_id"][1:]]


# -- --limit ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 7, 40, 1000])
def test_limit_keeps_the_first_photos_and_only_their_rows(capsys, unsplash_zip: UnsplashZip, tmp_path: Path,
                                                          limit: int) -> None:
    data_dir = tmp_path / "data"
    result = extract(capsys, unsplash_zip.path, data_dir, "--limit", str(limit))
    assert result.code == 0, result.err
    tables = unsplash_zip.tables
    first = tables["photos"].head(limit)
    kept = set(first["photo_id"])
    assert_table_equals(data_dir, "photos", first)
    for table in TABLES[1:]:
        frame = tables[table]
        assert_table_equals(data_dir, table, frame[frame["photo_id"].isin(kept)])
    data = report(data_dir)
    assert_report_adds_up(data)
    assert data["details"]["limit"] == limit
    for table, stats in data["details"]["tables"].items():
        frame = tables[table]
        assert stats["in"] == len(frame) and stats["rejected"] == 0
        assert stats["out"] == int(frame["photo_id"].isin(kept).sum()), table
        assert stats["skipped"] == len(frame) - stats["out"], table


def test_changing_the_limit_extracts_again(capsys, unsplash_zip: UnsplashZip, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert extract(capsys, unsplash_zip.path, data_dir, "--limit", "5").code == 0
    assert parquet(data_dir, "photos").num_rows == 5
    assert extract(capsys, unsplash_zip.path, data_dir, "--limit", "9").code == 0
    assert parquet(data_dir, "photos").num_rows == 9 and not report(data_dir)["details"].get("unchanged")
    assert extract(capsys, unsplash_zip.path, data_dir).code == 0
    assert parquet(data_dir, "photos").num_rows == 40 and report(data_dir)["details"]["limit"] is None


# -- bad rows ---------------------------------------------------------------------------------------


@dataclass
class Reject:
    file: Path
    line: int
    reason: str  # the exact reason
    raw: str  # a piece of the raw row that identifies it


def write_corrupt_release(tables: dict[str, pd.DataFrame], directory: Path) -> dict[str, list[Reject]]:
    """The release's files with bad rows mixed in; returns the rejects each table must report."""
    write_tsv_dir(tables, directory, split_conversions=3)
    expected: dict[str, list[Reject]] = {}

    photos = tables["photos"]
    path = directory / "photos.tsv000"
    out = TsvBuilder(photos)
    wanted = []
    out.add_rows(photos.iloc[0:4])
    wanted.append(Reject(path, out.add(b"shortrow001\thttps://unsplash.com/photos/shortrow001\n"),
                         "expected 30 fields, found 2", "shortrow001"))
    out.add_rows(photos.iloc[4:6])  # photo 5's description holds a quoted newline: two lines
    wanted.append(Reject(path, out.add(record(photos, 7, photo_id="badwidth001", photo_width="wide")),
                         "photo_width: wide is not an integer", "badwidth001"))
    out.add_rows(photos.iloc[6:7])
    wanted.append(Reject(path, out.add(record(photos, 7, photo_id="badtime0001", photo_submitted_at="last tuesday")),
                         "photo_submitted_at: last tuesday is not a timestamp (YYYY-MM-DD hh:mm:ss)",
                         "badtime0001"))
    wanted.append(Reject(path, out.add(record(photos, 8, photo_id="")), "photo_id is empty",
                         photos.loc[8, "photo_url"]))
    out.add_rows(photos.iloc[7:8])
    wanted.append(Reject(path, out.add(record(photos, 9, photo_id="latin1_0001", photo_description="PLACEHOLDER")
                                       .replace(b"PLACEHOLDER", b"caf\xe9 cr\xe8me")),
                         "bytes that are not UTF-8", "latin1_0001"))
    out.add_rows(photos.iloc[8:9])
    wanted.append(Reject(path, out.add(record(photos, 10, photo_id="toolong0001").replace(b"\n", b"\tsurplus\n")),
                         "expected 30 fields, found 31", "toolong0001"))
    wanted.append(Reject(path, out.add(record(photos, 3, photo_id="badfloat001", photo_location_latitude="north")),
                         "photo_location_latitude: north is not a number", "badfloat001"))
    out.add_rows(photos.iloc[9:])
    path.write_bytes(out.data)
    expected["photos"] = wanted

    # keywords: the header has a column the schema does not know, in the middle; one bad boolean.
    keywords = tables["keywords"].copy()
    keywords.insert(2, "language", "en")
    path = directory / "keywords.tsv000"
    out = TsvBuilder(keywords)
    out.add_rows(keywords.iloc[:10])
    line = out.add(record(keywords, 0, keyword="maybe-bool", suggested_by_user="maybe"))
    expected["keywords"] = [Reject(path, line, "suggested_by_user: maybe is not a boolean (t/f)", "maybe-bool")]
    out.add_rows(keywords.iloc[10:])
    path.write_bytes(out.data)

    colors = tables["colors"]
    path = directory / "colors.tsv000"
    out = TsvBuilder(colors)
    expected["colors"] = [
        Reject(path, out.add(record(colors, 0, red="300x", keyword="badred")), "red: 300x is not an integer", "badred"),
        Reject(path, out.add(record(colors, 1, hex="", keyword="nohex")), "hex is empty", "nohex"),
    ]
    out.add_rows(colors)
    path.write_bytes(out.data)

    # conversions: the bad row is in the second of three parts; lines count from that file's header.
    parts = table_files(tables, split_conversions=3)
    conversions = tables["conversions"]
    path = directory / "conversions.tsv001"
    first_part_rows = parts["conversions.tsv000"].count(b"\n") - 1
    second_part = conversions.iloc[first_part_rows:first_part_rows + parts["conversions.tsv001"].count(b"\n") - 1]
    out = TsvBuilder(conversions)
    out.add_rows(second_part.iloc[:2])
    line = out.add(record(conversions, 0, converted_at="2020-01-01 10:00:00 PM", keyword="pm-time"))
    expected["conversions"] = [Reject(path, line, "converted_at: 2020-01-01 10:00:00 PM is not a timestamp "
                                                  "(YYYY-MM-DD hh:mm:ss)", "pm-time")]
    out.add_rows(second_part.iloc[2:])
    assert out.data.count(b"\n") == parts["conversions.tsv001"].count(b"\n") + 1
    path.write_bytes(out.data)
    return expected


def test_bad_rows_are_quarantined_with_line_and_reason(capsys, small, tmp_path: Path) -> None:
    source = tmp_path / "release"
    expected = write_corrupt_release(small, source)
    data_dir = tmp_path / "data"
    result = extract(capsys, source, data_dir)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err

    for table in TABLES:  # every good row is loaded, in order, with its values and types
        assert_table_equals(data_dir, table, small[table])
    for table, wanted in expected.items():
        found = rejects(data_dir, table)
        assert list(found.columns) == ["file", "line", "reason", "raw"]
        assert [(Path(f), int(n), r) for f, n, r in zip(found["file"], found["line"], found["reason"], strict=True)] \
            == [(w.file, w.line, w.reason) for w in wanted], table
        for raw, want in zip(found["raw"], wanted, strict=True):
            assert want.raw in raw, (table, want)
    latin1 = rejects(data_dir, "photos").set_index("line").loc[expected["photos"][4].line, "raw"]
    assert "caf\ufffd cr\ufffdme" in latin1  # shown as replacement characters, never loaded
    assert not (data_dir / "rejects" / "extract-collections.csv").exists()

    data = report(data_dir)
    assert_report_adds_up(data)
    for table in TABLES:
        stats = data["details"]["tables"][table]
        bad = len(expected.get(table, []))
        assert stats["in"] == len(small[table]) + bad, table
        assert (stats["out"], stats["rejected"], stats["skipped"]) == (len(small[table]), bad, 0), table
        assert (stats["rejects_file"] is None) == (bad == 0), table
    assert data["rejects_by_reason"] == {
        "photos: expected 30 fields, found 2": 1, "photos: expected 30 fields, found 31": 1,
        "photos: photo_width": 1, "photos: photo_submitted_at": 1, "photos: photo_id is empty": 1,
        "photos: bytes that are not UTF-8": 1, "photos: photo_location_latitude": 1,
        "keywords: suggested_by_user": 1, "colors: red": 1, "colors: hex is empty": 1,
        "conversions: converted_at": 1,
    }
    assert "keywords: extra column(s) ignored: language" in data["notes"]
    assert "rejects:" in result.err


def test_rejects_file_disappears_when_the_source_is_fixed(capsys, small, tmp_path: Path) -> None:
    source = tmp_path / "release"
    write_corrupt_release(small, source)
    data_dir = tmp_path / "data"
    assert extract(capsys, source, data_dir).code == 0
    assert (data_dir / "rejects" / "extract-photos.csv").exists()
    shutil.rmtree(source)
    write_tsv_dir(small, source, split_conversions=3)
    assert extract(capsys, source, data_dir).code == 0
    assert list((data_dir / "rejects").iterdir()) == []
    assert report(data_dir)["rejected"] == 0


def write_with_duplicate(tables: dict[str, pd.DataFrame], directory: Path) -> tuple[str, int]:
    """Photo 3 appears again at the end with another description; returns (its id, the copy's line)."""
    write_tsv_dir(tables, directory)
    photos = tables["photos"]
    out = TsvBuilder(photos)
    out.add_rows(photos)
    line = out.add(record(photos, 3, photo_description="the second copy"))
    (directory / "photos.tsv000").write_bytes(out.data)
    return photos.loc[3, "photo_id"], line


def test_duplicate_photo_id_keeps_the_first_copy(capsys, small, tmp_path: Path) -> None:
    source = tmp_path / "release"
    duplicate, _ = write_with_duplicate(small, source)
    data_dir = tmp_path / "data"
    result = extract(capsys, source, data_dir)
    assert result.code == 0, result.err
    assert_table_equals(data_dir, "photos", small["photos"])  # the first copy, where it was
    assert "the second copy" not in parquet(data_dir, "photos")["photo_description"].to_pylist()
    found = rejects(data_dir, "photos")
    assert found["reason"].tolist() == ["duplicate photo_id"]
    assert duplicate in found["raw"].iloc[0]
    data = report(data_dir)
    assert_report_adds_up(data)
    stats = data["details"]["tables"]["photos"]
    assert (stats["in"], stats["out"], stats["rejected"], stats["skipped"]) == (13, 12, 1, 0)
    assert data["rejects_by_reason"] == {"photos: duplicate photo_id": 1}
    # the duplicate's child rows are not doubled
    assert parquet(data_dir, "keywords").num_rows == len(small["keywords"])


def test_duplicate_and_limit_count_distinct_photos(capsys, small, tmp_path: Path) -> None:
    source = tmp_path / "release"
    write_with_duplicate(small, source)
    data_dir = tmp_path / "data"
    assert extract(capsys, source, data_dir, "--limit", "12").code == 0
    assert parquet(data_dir, "photos")["photo_id"].to_pylist() == small["photos"]["photo_id"].tolist()
    assert_report_adds_up(report(data_dir))


def test_duplicate_reject_names_its_file_and_line(capsys, small, tmp_path: Path) -> None:
    source = tmp_path / "release"
    _, line = write_with_duplicate(small, source)
    data_dir = tmp_path / "data"
    assert extract(capsys, source, data_dir).code == 0
    found = rejects(data_dir, "photos")
    assert (Path(found["file"].iloc[0]), found["line"].iloc[0]) == (source / "photos.tsv000", line)


@pytest.mark.parametrize("moment", ["2021-02-30 10:00:00", "2021-13-01 00:00:00", "2021-03-04 25:00:00"])
def test_impossible_timestamp_is_a_reject_not_a_crash(capsys, small, tmp_path: Path, moment: str) -> None:
    source = tmp_path / "release"
    write_tsv_dir(small, source)
    collections = small["collections"]
    out = TsvBuilder(collections)
    line = out.add(record(collections, 0, photo_collected_at=moment))
    out.add_rows(collections)
    (source / "collections.tsv000").write_bytes(out.data)
    data_dir = tmp_path / "data"
    result = extract(capsys, source, data_dir)
    assert result.code == 0, result.err
    assert_table_equals(data_dir, "collections", collections)
    found = rejects(data_dir, "collections")
    assert found["line"].tolist() == [line] and "photo_collected_at" in found["reason"].iloc[0]


KEYWORDS_HEADER = "photo_id\tkeyword\tai_service_1_confidence\tai_service_2_confidence\tsuggested_by_user\n"
LINE_NUMBER_CASES = {
    # a row with too few fields whose text is the start of an earlier, good row
    "short-row-matching-an-earlier-row": (KEYWORDS_HEADER + "p1\tsky\t1\t1\tt\np1\tsky\n", 3),
    # a blank line is skipped by the parser but is still a line of the file
    "after-a-blank-line": (KEYWORDS_HEADER + "p1\tsky\t1\t1\tt\n\np2\tsea\tx\t1\tt\n", 4),
    # a quoted newline inside a column extract ignores
    "after-a-newline-in-an-ignored-column": (
        KEYWORDS_HEADER.replace("\n", "\tnote\n") + 'p1\tsky\t1\t1\tt\t"two\nlines"\np2\tsea\tx\t1\tt\tok\n', 4),
}


@pytest.mark.parametrize("case", list(LINE_NUMBER_CASES))
def test_reject_line_numbers_in_awkward_files(capsys, small, tmp_path: Path, case: str) -> None:
    text, line = LINE_NUMBER_CASES[case]
    source = tmp_path / "release"
    write_tsv_dir(small, source)
    (source / "keywords.tsv000").write_text(text, encoding="utf-8")
    data_dir = tmp_path / "data"
    assert extract(capsys, source, data_dir).code == 0
    assert rejects(data_dir, "keywords")["line"].tolist() == [line]


# -- errors -----------------------------------------------------------------------------------------


def _unreachable(tmp_path: Path, zip_path: Path, server: FixtureServer) -> tuple[str, list[str]]:
    url = f"http://127.0.0.1:{closed_port()}/unsplash.zip"
    return url, [url, "cannot reach"]


def _served_html(tmp_path: Path, zip_path: Path, server: FixtureServer) -> tuple[str, list[str]]:
    url = server.add_file("sign-in-page.zip", b"<!doctype html><p>Please sign in.</p>")
    return url, [str(Path("downloads") / "sign-in-page.zip"), "not a readable zip archive"]


def _truncated_zip(tmp_path: Path, zip_path: Path, server: FixtureServer) -> tuple[str, list[str]]:
    path = tmp_path / "truncated.zip"
    data = zip_path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path), [str(path), "not a readable zip archive"]


def _not_a_zip(tmp_path: Path, zip_path: Path, server: FixtureServer) -> tuple[str, list[str]]:
    path = tmp_path / "photos.tsv"
    path.write_text("photo_id\tphoto_url\nabc\thttps://unsplash.com/photos/abc\n")
    return str(path), [str(path), "not a readable zip archive"]


def _no_photos(tmp_path: Path, zip_path: Path, server: FixtureServer) -> tuple[str, list[str]]:
    directory = tmp_path / "release"
    write_tsv_dir(make_dataset(3), directory)
    (directory / "photos.tsv000").unlink()
    return str(directory), [str(directory), "no photos.tsv000"]


def _zip_without_photos(tmp_path: Path, zip_path: Path, server: FixtureServer) -> tuple[str, list[str]]:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("README.md", "not the dataset")
    return str(path), [str(path), "no photos.tsv000"]


def _missing_path(tmp_path: Path, zip_path: Path, server: FixtureServer) -> tuple[str, list[str]]:
    path = tmp_path / "no" / "such" / "release.zip"
    return str(path), [str(path), "no such file or directory"]


def _empty_photos(tmp_path: Path, zip_path: Path, server: FixtureServer) -> tuple[str, list[str]]:
    directory = tmp_path / "release"
    write_tsv_dir(make_dataset(3), directory)
    (directory / "photos.tsv000").write_bytes(b"")
    return str(directory), [str(directory / "photos.tsv000"), "empty"]


def _missing_column(tmp_path: Path, zip_path: Path, server: FixtureServer) -> tuple[str, list[str]]:
    directory = tmp_path / "release"
    tables = make_dataset(3)
    tables["photos"] = tables["photos"].drop(columns=["photo_width"])
    write_tsv_dir(tables, directory)
    return str(directory), [str(directory / "photos.tsv000"), "missing column(s) photo_width"]


ERROR_CASES = {f.__name__.strip("_"): f for f in (
    _unreachable, _served_html, _truncated_zip, _not_a_zip, _no_photos, _zip_without_photos, _missing_path,
    _empty_photos, _missing_column,
)}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_unreadable_sources_exit_3_naming_the_input(capsys, fixture_server: FixtureServer,
                                                    unsplash_zip: UnsplashZip, tmp_path: Path, case: str) -> None:
    source, needles = ERROR_CASES[case](tmp_path, unsplash_zip.path, fixture_server)
    data_dir = tmp_path / "data"
    result = extract(capsys, source, data_dir)
    assert result.code == 3, result.err
    assert result.err.startswith("clipsql extract: error: ") and result.err.count("\n") == 1, result.err
    for needle in needles:
        assert needle in result.err, (needle, result.err)
    assert "Traceback" not in result.err and result.out == ""
    assert not (data_dir / "parquet" / "photos.parquet").exists()


def test_corrupt_zip_member_exits_3_naming_it(capsys, unsplash_zip: UnsplashZip, tmp_path: Path) -> None:
    data = bytearray(unsplash_zip.path.read_bytes())
    with zipfile.ZipFile(unsplash_zip.path) as archive:
        info = archive.getinfo("photos.tsv000")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 200
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    path = tmp_path / "corrupt.zip"
    path.write_bytes(bytes(data))
    result = extract(capsys, path, tmp_path / "data")
    assert result.code == 3
    assert str(path) in result.err and "photos.tsv000" in result.err


# -- re-runs ----------------------------------------------------------------------------------------


def _mtimes(data_dir: Path) -> dict[str, int]:
    return {t: (data_dir / "parquet" / f"{t}.parquet").stat().st_mtime_ns for t in TABLES}


def test_same_source_is_not_extracted_twice_and_a_changed_one_is(capsys, small, tmp_path: Path) -> None:
    source = tmp_path / "release"
    write_tsv_dir(small, source, split_conversions=3)
    data_dir = tmp_path / "data"
    assert extract(capsys, source, data_dir).code == 0
    before = _mtimes(data_dir)

    again = extract(capsys, source, data_dir)
    assert again.code == 0 and "unchanged" in again.err
    data = report(data_dir)
    assert data["details"]["unchanged"] is True and any("unchanged" in n for n in data["notes"])
    assert data["out"] == 0 and data["in"] == data["skipped"] == sum(table_counts(small).values())
    assert _mtimes(data_dir) == before

    changed = {name: frame.copy() for name, frame in small.items()}
    changed["keywords"].loc[0, "keyword"] = "a brand new keyword"
    write_tsv_dir(changed, source, split_conversions=3)
    third = extract(capsys, source, data_dir)
    assert third.code == 0 and "unchanged" not in third.err
    assert not report(data_dir)["details"].get("unchanged")
    assert_table_equals(data_dir, "keywords", changed["keywords"])
    assert _mtimes(data_dir)["keywords"] != before["keywords"]

    # one more split file for a table is a change too
    tables = dict(changed)
    write_tsv_dir(tables, source, split_conversions=4)
    assert extract(capsys, source, data_dir).code == 0
    assert not report(data_dir)["details"].get("unchanged")
    assert_table_equals(data_dir, "conversions", changed["conversions"])


def test_deleted_parquet_is_extracted_again(capsys, small, tmp_path: Path) -> None:
    source = tmp_path / "release"
    write_tsv_dir(small, source)
    data_dir = tmp_path / "data"
    assert extract(capsys, source, data_dir).code == 0
    (data_dir / "parquet" / "colors.parquet").unlink()
    assert extract(capsys, source, data_dir).code == 0
    assert not report(data_dir)["details"].get("unchanged")
    assert_table_equals(data_dir, "colors", small["colors"])


def test_moved_directory_with_relative_images_is_extracted_again(capsys, small, tmp_path: Path) -> None:
    tables = {name: frame.copy() for name, frame in small.items()}
    tables["photos"]["photo_image_url"] = "images/" + tables["photos"]["photo_id"] + ".jpg"
    old, new = tmp_path / "old", tmp_path / "new"
    write_tsv_dir(tables, old)
    data_dir = tmp_path / "data"
    assert extract(capsys, old, data_dir).code == 0
    shutil.copytree(old, new)
    shutil.rmtree(old)
    assert extract(capsys, new, data_dir).code == 0
    url = parquet(data_dir, "photos")["photo_image_url"][0].as_py()
    assert url.startswith(new.resolve().as_uri() + "/")


# -- hf: precomputed vectors ------------------------------------------------------------------------


@dataclass
class HfRelease:
    directory: Path
    ids: list[str]
    vectors: np.ndarray  # (n, 512) float32, rows of the bad ones included
    bad: dict[str, str]  # photo_id -> reject reason
    conversions: pd.DataFrame

    @property
    def good(self) -> list[int]:
        return [i for i, pid in enumerate(self.ids) if pid not in self.bad]


def write_hf_release(directory: Path, n: int = 24) -> HfRelease:
    """photos-all.parquet and conversions-all.parquet shaped like myscale/unsplash-examples.

    Vectors are a shared direction plus noise of distinct sizes, so nearest neighbours are
    separated by clear margins; four rows are broken (NaN, +inf, 511 and 513 numbers)."""
    tables = make_dataset(n, seed=11)
    ids = tables["photos"]["photo_id"].tolist()
    rng = np.random.default_rng(5)
    base = rng.standard_normal(512)
    noise = rng.standard_normal((n, 512))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    scales = rng.permutation(np.linspace(0.1, 3.0, n))
    vectors = (base / np.linalg.norm(base) + scales[:, None] * noise).astype(np.float32)
    embeds: list[list[float]] = [v.tolist() for v in vectors]
    nan_reason, dim_reason = "vector contains NaN or infinity", "vector has the wrong dimension (expected 512)"
    embeds[3][100] = float("nan")
    embeds[6][0] = float("inf")
    embeds[9] = embeds[9][:511]
    embeds[12] = embeds[12] + [0.5]
    bad = {ids[3]: nan_reason, ids[6]: nan_reason, ids[9]: dim_reason, ids[12]: dim_reason}
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "id": pa.array(range(n), pa.int64()),
        "photo_id": ids,
        "photo_image_url": tables["photos"]["photo_image_url"].tolist(),
        "photo_embed": pa.array(embeds, pa.list_(pa.float32())),
    }), directory / "photos-all.parquet")
    conversions = tables["conversions"][["photo_id", "keyword"]].reset_index(drop=True)
    pq.write_table(pa.table({
        "id": pa.array(range(len(conversions)), pa.int64()),
        "photo_id": conversions["photo_id"].tolist(),
        "keyword": conversions["keyword"].tolist(),
    }), directory / "conversions-all.parquet")
    return HfRelease(directory, ids, vectors, bad, conversions)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the datasets cache of these tests out of the home directory."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def check_hf_run(capsys, release: HfRelease, data_dir: Path) -> None:
    result = run_cli(capsys, "run", "--source", f"hf:{release.directory}", "--data-dir", data_dir)
    assert result.code == 0, result.err
    good_ids = [release.ids[i] for i in release.good]
    kept_conversions = release.conversions[release.conversions["photo_id"].isin(good_ids)]

    photos = parquet(data_dir, "photos")
    assert photos.schema == TABLE_SCHEMAS["photos"]
    assert photos["photo_id"].to_pylist() == good_ids
    conversions = parquet(data_dir, "conversions")
    assert sorted(zip(conversions["photo_id"].to_pylist(), conversions["keyword"].to_pylist(), strict=True)) \
        == sorted(zip(kept_conversions["photo_id"], kept_conversions["keyword"], strict=True))
    for table in ("keywords", "collections", "colors"):
        assert parquet(data_dir, table).num_rows == 0, table

    store = EmbeddingStore(data_dir / "embeddings", DEFAULT_MODEL)
    assert store.meta()["dim"] == 512
    stored = store.read_all()
    by_id = dict(zip(stored["photo_id"].to_pylist(), stored["embedding"].to_pylist(), strict=True))
    assert sorted(by_id) == sorted(good_ids)
    for i in release.good:  # stored L2-normalised, so cosine and L2 search agree
        unit = release.vectors[i] / np.linalg.norm(release.vectors[i])
        np.testing.assert_allclose(np.asarray(by_id[release.ids[i]], np.float32), unit, rtol=1e-5, atol=1e-7)

    extract_report = report(data_dir)
    assert extract_report["rejected"] == len(release.bad)
    assert extract_report["in"] == extract_report["out"] + extract_report["skipped"] + extract_report["rejected"]
    assert extract_report["out"] == len(good_ids) + len(kept_conversions)
    assert extract_report["rejects_by_reason"] == {
        "photos: vector contains NaN or infinity": 2, "photos: vector has the wrong dimension (expected 512)": 2}
    reject_files = list((data_dir / "rejects").glob("extract*.csv"))
    assert len(reject_files) == 1
    found = pd.read_csv(reject_files[0], dtype=str, keep_default_na=False)
    assert dict(zip(found["photo_id"], found["reason"], strict=True)) == release.bad

    embed_report = report(data_dir, "embed")
    assert embed_report["out"] == 0 and embed_report["rejected"] == 0
    assert embed_report["skipped"] == len(good_ids)

    with database(data_dir) as db:
        assert db.count("photos") == len(good_ids)
        assert db.count("conversions") == len(kept_conversions)
        assert db.count(store.table_name) == len(good_ids)

    good_vectors = release.vectors[release.good]
    for target, extra in ((release.ids[0], ()), (release.ids[release.good[-1]], ("--exact",))):  # ids[0]: '-...'
        expected = exact_knn(good_ids, good_vectors, release.vectors[release.ids.index(target)], 5, exclude=target)
        found_rows = run_cli(capsys, "search", f"--photo-id={target}", "-k", "5", "--format", "json",
                             "--data-dir", data_dir, *extra)
        assert found_rows.code == 0, found_rows.err
        rows = found_rows.json()
        assert [r["photo_id"] for r in rows] == [i for i, _ in expected]
        np.testing.assert_allclose([r["distance"] for r in rows], [d for _, d in expected], atol=1e-3)


def test_hf_source_runs_without_computing_vectors(capsys, hf_cache, tmp_path: Path) -> None:
    release = write_hf_release(tmp_path / "unsplash-examples")
    data_dir = tmp_path / "data"
    check_hf_run(capsys, release, data_dir)

    # a second run adds no vectors and leaves the database as it was
    again = run_cli(capsys, "run", "--source", f"hf:{release.directory}", "--data-dir", data_dir)
    assert again.code == 0, again.err
    assert report(data_dir)["details"]["vectors_added"] == 0
    load_report = report(data_dir, "load")
    assert load_report["out"] == 0 and load_report["skipped"] == load_report["in"]  # nothing reloaded or rebuilt
    store = EmbeddingStore(data_dir / "embeddings", DEFAULT_MODEL)
    assert store.read_all().num_rows == len(release.good)
    with database(data_dir) as db:
        assert db.count(store.table_name) == len(release.good)


def test_hf_source_that_cannot_be_loaded_exits_3(capsys, hf_cache, tmp_path: Path) -> None:
    empty = tmp_path / "empty-dataset"
    empty.mkdir()
    result = run_cli(capsys, "extract", "--source", f"hf:{empty}", "--data-dir", tmp_path / "data")
    assert result.code == 3 and f"hf:{empty}" in result.err and "Traceback" not in result.err
