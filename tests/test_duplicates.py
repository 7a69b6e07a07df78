"""Near-duplicates on real images with known copies: a byte copy, a re-encode, a resize, a mirror.

The originals are 24 openclipart images of the bundled sample; copies are added to the same
release as new photos, embedded with the real EfficientNet-Lite0 weights. Every tier is checked
against an independent computation (Python Hamming over the stored hashes, numpy distances).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.phash import hamming, phash64
from pipeline.resources import sample_dir
from pipeline.store import EmbeddingStore, HashStore
from tests.helpers import database, run_cli

ORIGINALS = 24
COPIES = {"bytecopy": 0, "reencode": 1, "resize": 2, "mirror": 3}  # kind -> which original


def _variant(path: Path, kind: str) -> bytes:
    data = path.read_bytes()
    if kind == "bytecopy":
        return data
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if kind == "resize":
        image = image.resize((image.width // 2, image.height // 2))
    if kind == "mirror":
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=40)
    return out.getvalue()


@pytest.fixture(scope="module")
def dup_db(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("dups")
    release = root / "release"
    (release / "images").mkdir(parents=True)
    tables = {}
    for name in ("photos", "keywords", "collections", "conversions", "colors"):
        files = sorted(sample_dir().glob(f"{name}.tsv*"))
        tables[name] = pd.concat([pd.read_csv(f, sep="\t", dtype=str, keep_default_na=False, quoting=3)
                                  for f in files])
    photos = tables["photos"].head(ORIGINALS).copy()
    for photo_id in photos["photo_id"]:
        shutil.copy(sample_dir() / "images" / f"{photo_id}.jpg", release / "images" / f"{photo_id}.jpg")
    copies = []
    for kind, index in COPIES.items():
        row = photos.iloc[index].copy()
        original = row["photo_id"]
        row["photo_id"] = f"copy-{kind}"
        row["photo_image_url"] = f"images/copy-{kind}.jpg"
        (release / "images" / f"copy-{kind}.jpg").write_bytes(_variant(sample_dir() / "images" / f"{original}.jpg", kind))
        copies.append(row)
    tables["photos"] = pd.concat([photos, pd.DataFrame(copies)])
    ids = set(tables["photos"]["photo_id"])
    for name, frame in tables.items():
        frame = frame[frame["photo_id"].isin(ids)]
        frame.to_csv(release / f"{name}.tsv000", sep="\t", index=False, quoting=3)
    data_dir = root / "data"
    return release, data_dir, photos["photo_id"].tolist()


def _run(capsys, dup_db) -> Path:
    release, data_dir, _ = dup_db
    if not (data_dir / "clickhouse").exists():
        result = run_cli(capsys, "run", "--source", release, "--model", "efficientnet-lite0", "--data-dir", data_dir)
        assert result.code == 0, result.err
    return data_dir


def test_hashes_are_stored_per_photo_and_match_the_images(capsys, dup_db) -> None:
    release, _, originals = dup_db
    data_dir = _run(capsys, dup_db)
    stored = HashStore(data_dir / "hashes").read_all().to_pandas().set_index("photo_id")
    assert len(stored) == ORIGINALS + len(COPIES)
    from pipeline.images import decode_image

    for photo_id in originals[:5]:
        expected = phash64(decode_image((release / "images" / f"{photo_id}.jpg").read_bytes(), 224))
        assert int(stored.loc[photo_id, "phash"]) == expected
    with database(data_dir) as db:
        assert db.count("photo_hashes") == ORIGINALS + len(COPIES)


def test_each_tier_finds_its_copies_and_agrees_with_brute_force(capsys, dup_db) -> None:
    _, _, originals = dup_db
    data_dir = _run(capsys, dup_db)
    hashes = HashStore(data_dir / "hashes").read_all().to_pandas()
    result = run_cli(capsys, "duplicates", "--tier", "exact", "--tier", "phash", "--max-hamming", "10",
                     "--format", "json", "--data-dir", data_dir)
    assert result.code == 0, result.err
    rows = pd.DataFrame(result.json())
    # brute force over the stored hashes: every pair within 10 bits, byte-identical ones as exact
    records = hashes.to_dict("records")
    expected = set()
    for i, a in enumerate(records):
        for b in records[i + 1:]:
            if a["sha256"] == b["sha256"] or hamming(int(a["phash"]), int(b["phash"])) <= 10:
                expected.add(frozenset((a["photo_id"], b["photo_id"])))
    found_members = set(rows["photo_id"])
    assert found_members == set().union(*expected)
    tier = dict(zip(rows["photo_id"], rows["tier"], strict=True))
    group = dict(zip(rows["photo_id"], rows["group"], strict=True))
    assert tier["copy-bytecopy"] == "exact" and group["copy-bytecopy"] == group[originals[0]]
    for kind in ("reencode", "resize"):
        assert tier[f"copy-{kind}"] in ("phash", "exact") and group[f"copy-{kind}"] == group[originals[COPIES[kind]]]


def test_embedding_tier_catches_the_mirror_and_matches_numpy(capsys, dup_db) -> None:
    _, _, originals = dup_db
    data_dir = _run(capsys, dup_db)
    table = EmbeddingStore(data_dir / "embeddings", "efficientnet-lite0").read_all()
    ids = table["photo_id"].to_pylist()
    vectors = np.array(table["embedding"].to_pylist(), dtype=np.float64)
    distances = 1 - vectors @ vectors.T
    mirror = ids.index("copy-mirror"), ids.index(originals[COPIES["mirror"]])
    threshold = max(0.08, float(distances[mirror]) + 1e-3)
    expected = {frozenset((ids[i], ids[j])) for i in range(len(ids)) for j in range(i + 1, len(ids))
                if distances[i, j] <= threshold}
    result = run_cli(capsys, "duplicates", "--tier", "embedding", "--max-distance", str(threshold), "--format", "json",
                     "--data-dir", data_dir)
    assert result.code == 0, result.err
    rows = pd.DataFrame(result.json())
    assert set(rows["photo_id"]) == set().union(*expected)
    group = dict(zip(rows["photo_id"], rows["group"], strict=True))
    assert group["copy-mirror"] == group[originals[COPIES["mirror"]]]
    assert (rows["tier"] == "embedding").all()


def test_duplicate_arguments_are_checked(capsys, dup_db) -> None:
    data_dir = _run(capsys, dup_db)
    result = run_cli(capsys, "duplicates", "--max-hamming", "65", "--data-dir", data_dir)
    assert result.code == 2 and "--max-hamming must be between 0 and 64" in result.err
    result = run_cli(capsys, "duplicates", "--tier", "exact", "--in", "ids:copy-bytecopy", "--format", "json",
                     "--data-dir", data_dir)
    assert result.code == 0 and result.json() == []  # its twin is outside the selection


def test_keyword_vectors_need_a_text_tower(capsys, dup_db) -> None:
    data_dir = _run(capsys, dup_db)
    result = run_cli(capsys, "keywords", "--like", "people", "--data-dir", data_dir)
    assert result.code == 6 and "has no keyword vectors" in result.err
