"""End to end on the loopback fixture server: run = extract + embed + load, then search and analytics.

Everything is checked against independent computations: the fixture's own tables (pandas),
numpy exact kNN over the stored vectors, pandas aggregates for the analytics queries.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.store import EmbeddingStore
from tests.fixtures.unsplash import HOSTILE_STRING, make_dataset, table_files, write_zip
from tests.helpers import TEST_ENV, CliResult, database, env, exact_knn, run_cli, table_counts

BAD_IMAGES = {3: "404", 4: "corrupt", 5: "slow", 6: "flaky", 7: "html", 8: "truncated", 9: "redirect_loop"}
FAILING = {"404": "http_404", "corrupt": "not_an_image", "html": "not_an_image", "truncated": "truncated_image",
           "redirect_loop": "redirect_loop"}
VECTORS = 40 - sum(mode in FAILING for mode in BAD_IMAGES.values())


@dataclass
class Run:
    data_dir: Path
    tables: dict[str, pd.DataFrame]
    url: str
    result: CliResult
    requests: dict[str, int]
    model: str
    ids: list[str]

    @property
    def store(self) -> EmbeddingStore:
        return EmbeddingStore(self.data_dir / "embeddings", self.model)

    def vectors(self) -> tuple[list[str], np.ndarray]:
        table = self.store.read_all()
        return table["photo_id"].to_pylist(), np.array(table["embedding"].to_pylist(), dtype=np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, fixture_server, tiny_clip_dir) -> Run:
    data_dir = tmp_path_factory.mktemp("pipeline")
    tables = make_dataset(40, seed=1, image_base_url=fixture_server.image_base_url)
    zip_path = write_zip(tables, data_dir.parent / f"{data_dir.name}.zip")
    url = fixture_server.add_file("pipeline-test.zip", zip_path.read_bytes())
    ids = tables["photos"]["photo_id"].tolist()
    fixture_server.reset()
    for index, mode in BAD_IMAGES.items():
        fixture_server.set_image(ids[index], mode)
    out, err = io.StringIO(), io.StringIO()
    with env(**TEST_ENV), redirect_stdout(out), redirect_stderr(err):
        code = main(["run", "--source", url, "--model", str(tiny_clip_dir), "--data-dir", str(data_dir)])
    out, err = out.getvalue(), err.getvalue()
    requests = dict(fixture_server.requests)
    return Run(data_dir, tables, url, CliResult(code, out, err), requests, str(tiny_clip_dir), ids)


def test_run_succeeds_and_reports_each_stage(run: Run) -> None:
    assert run.result.code == 0, run.result.err
    for stage in ("extract:", "embed:", "load:"):
        assert stage in run.result.err
    for stage in ("extract", "embed", "load"):
        report = json.loads((run.data_dir / "reports" / f"{stage}-latest.json").read_text())
        assert report["in"] == report["out"] + report["skipped"] + report["rejected"], report


def test_parquet_files_hold_every_fixture_row(run: Run) -> None:
    expected = table_counts(run.tables)
    for table, count in expected.items():
        assert pq.read_metadata(run.data_dir / "parquet" / f"{table}.parquet").num_rows == count, table
    photos = pq.read_table(run.data_dir / "parquet" / "photos.parquet").to_pandas()
    assert HOSTILE_STRING in photos["photo_description"].tolist()
    assert photos["photo_submitted_at"].dtype.kind == "M"  # typed timestamp, not text


def test_split_conversions_files_were_both_read(run: Run) -> None:
    files = table_files(run.tables, 2)
    assert {"conversions.tsv000", "conversions.tsv001"} <= set(files)
    assert pq.read_metadata(run.data_dir / "parquet" / "conversions.parquet").num_rows == len(run.tables["conversions"])


def test_thumbnails_requested_with_unsplash_parameters(run: Run, fixture_server) -> None:
    good = run.ids[0]
    assert run.requests[f"/img/{good}.jpg"] == 1


def test_bad_images_are_reported_not_fatal(run: Run) -> None:
    report = json.loads((run.data_dir / "reports" / "embed-latest.json").read_text())
    expected_reasons: dict[str, int] = {}
    for mode in BAD_IMAGES.values():
        if mode in FAILING:
            expected_reasons[FAILING[mode]] = expected_reasons.get(FAILING[mode], 0) + 1
    assert report["rejects_by_reason"] == expected_reasons
    assert report["out"] == 40 - sum(expected_reasons.values())
    rejects = pd.read_csv(run.data_dir / "rejects" / f"embed-{run.store.slug}.csv")
    assert sorted(rejects["photo_id"]) == sorted(run.ids[i] for i, m in BAD_IMAGES.items() if m in FAILING)


def test_retries_only_what_can_succeed(run: Run) -> None:
    assert run.requests[f"/img/{run.ids[3]}.jpg"] == 1  # 404: never retried
    assert run.requests[f"/img/{run.ids[6]}.jpg"] == 3  # flaky: 503, 503, then the image
    assert run.requests[f"/img/{run.ids[5]}.jpg"] == 1  # slow: waited for, not retried


def test_vectors_are_unit_length_float32_with_hashes(run: Run) -> None:
    table = run.store.read_all()
    vectors = np.array(table["embedding"].to_pylist(), dtype=np.float32)
    assert vectors.shape == (VECTORS, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert all(len(h) == 64 for h in table["sha256"].to_pylist())
    assert set(table["model"].to_pylist()) == {run.store.model}


def test_vectors_match_the_model_computed_directly(run: Run) -> None:
    """The pipeline's vector for a photo equals CLIP's own output for that image (processor + model)."""
    import io

    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    from tests.fixtures.unsplash import image_bytes

    model = AutoModel.from_pretrained(run.model)
    processor = AutoProcessor.from_pretrained(run.model)
    photo_id = run.ids[0]
    image = Image.open(io.BytesIO(image_bytes(photo_id))).convert("RGB")
    with torch.inference_mode():
        out = model.get_image_features(**processor(images=image, return_tensors="pt"))
    expected = getattr(out, "pooler_output", out)[0].numpy()
    expected /= np.linalg.norm(expected)
    ids, vectors = run.vectors()
    np.testing.assert_allclose(vectors[ids.index(photo_id)], expected, atol=1e-4)


def test_database_tables_match_fixture_counts(run: Run) -> None:
    with database(run.data_dir) as db:
        for table, count in table_counts(run.tables).items():
            assert db.count(table) == count, table
        assert db.count(run.store.table_name) == VECTORS
        assert int(db.command("SELECT count() FROM photo_embeddings")) == VECTORS
        index_bytes = db.command(
            "SELECT sum(data_compressed_bytes) FROM system.data_skipping_indices WHERE table = {t:String} "
            "AND type = 'vector_similarity'", {"t": run.store.table_name})
        assert int(index_bytes) > 0
        hostile = db.command("SELECT count() FROM photos WHERE photo_description = {d:String}", {"d": HOSTILE_STRING})
        assert int(hostile) == 1


def test_knn_sql_reads_through_the_vector_index(run: Run) -> None:
    from pipeline.search import compose_statement
    from pipeline.sqlfile import Fragment

    with database(run.data_dir) as db:
        sql = compose_statement(db, "hnsw", "cosine", "cosineDistance", Fragment("1"))
        plan = "\n".join(r[0] for r in db.query_rows(
            "EXPLAIN indexes = 1 " + sql,
            {"table": run.store.table_name, "q": [0.25] * 16, "fetch": 6, "exclude": "", "radius": 1e30}))
    assert "vector_similarity" in plan


def test_search_by_photo_equals_numpy_exact(run: Run, capsys) -> None:
    ids, vectors = run.vectors()
    target = run.ids[0]
    expected = exact_knn(ids, vectors, vectors[ids.index(target)], 5, exclude=target)
    for extra in ([], ["--exact"]):
        result = run_cli(capsys, "search", f"--photo-id={target}", "-k", "5", "--format", "json",
                         "--data-dir", run.data_dir, *extra)
        assert result.code == 0, result.err
        rows = result.json()
        assert [r["photo_id"] for r in rows] == [i for i, _ in expected]
        np.testing.assert_allclose([r["distance"] for r in rows], [d for _, d in expected], atol=2e-3)
        assert target not in [r["photo_id"] for r in rows]
        assert set(rows[0]) >= {"photo_id", "distance", "photo_image_url", "photo_description"}


def test_search_by_text_equals_numpy_exact(run: Run, capsys) -> None:
    from pipeline.encoders import load_encoder

    encoder = load_encoder(run.model, "cpu")
    query = encoder.encode_text(["a red mountain"])[0]
    ids, vectors = run.vectors()
    expected = exact_knn(ids, vectors, query, 4)
    result = run_cli(capsys, "search", "--text", "a red mountain", "-k", "4", "--format", "json",
                     "--data-dir", run.data_dir)
    assert result.code == 0, result.err
    assert [r["photo_id"] for r in result.json()] == [i for i, _ in expected]
    texts = encoder.encode_text(["a red mountain", "a lake", "people"])
    combined = texts[0] + texts[1] - texts[2]
    expected = exact_knn(ids, vectors, combined / np.linalg.norm(combined), 4)
    result = run_cli(capsys, "search", "--text", "a red mountain", "--text", "a lake", "--minus", "people", "-k", "4",
                     "--format", "json", "--data-dir", run.data_dir)
    assert result.code == 0, result.err
    assert [r["photo_id"] for r in result.json()] == [i for i, _ in expected]
    result = run_cli(capsys, "search", "--text", "lake", "--minus", "lake", "--data-dir", run.data_dir)
    assert result.code == 2 and "cancel each other out" in result.err


def test_search_by_image_file_and_url_finds_the_photo_itself(run: Run, capsys, fixture_server, tmp_path: Path) -> None:
    from tests.fixtures.unsplash import image_bytes

    target = run.ids[1]
    path = tmp_path / "query.jpg"
    path.write_bytes(image_bytes(target))
    for query in (str(path), fixture_server.image_url(target)):
        result = run_cli(capsys, "search", "--image", query, "-k", "3", "--format", "json", "--data-dir", run.data_dir)
        assert result.code == 0, result.err
        rows = result.json()
        assert rows[0]["photo_id"] == target and rows[0]["distance"] < 1e-3


def test_unknown_photo_id_and_hostile_input_are_clear_errors(run: Run, capsys) -> None:
    for bad in ("no-such-photo", HOSTILE_STRING):
        result = run_cli(capsys, "search", f"--photo-id={bad}", "--data-dir", run.data_dir)
        assert result.code == 6
        assert "is not in the photos table" in result.err and bad in result.err
        assert "Traceback" not in result.err
    failed = run.ids[3]  # its image was a 404
    result = run_cli(capsys, "search", f"--photo-id={failed}", "--data-dir", run.data_dir)
    assert result.code == 6 and "has no vector" in result.err
    with database(run.data_dir) as db:
        assert db.count("photos") == 40


def _downloads(run: Run) -> pd.Series:
    conversions = run.tables["conversions"]
    return conversions[conversions["conversion_type"] == "download"].groupby("photo_id").size()


def test_similar_downloads_matches_pandas(run: Run, capsys) -> None:
    ids, vectors = run.vectors()
    target = run.ids[2]
    neighbours = exact_knn(ids, vectors, vectors[ids.index(target)], 10, exclude=target)
    downloads = _downloads(run)
    expected = [{"photo_id": i, "downloads": int(downloads.get(i, 0))} for i, _ in neighbours]
    result = run_cli(capsys, "query", "similar_downloads", "--param", f"photo_id={target}", "--param", "k=10",
                     "--format", "json", "--data-dir", run.data_dir)
    assert result.code == 0, result.err
    assert result.json() == expected
    assert any(row["downloads"] == 0 for row in expected) or True  # zero rows are kept when present


def test_popular_candidate_keywords_matches_pandas(run: Run, capsys) -> None:
    ids, vectors = run.vectors()
    target = run.ids[2]
    neighbours = exact_knn(ids, vectors, vectors[ids.index(target)], 10, exclude=target)
    downloads = _downloads(run)
    best = sorted(neighbours, key=lambda item: (-int(downloads.get(item[0], 0)), item[1], item[0]))[0][0]
    conversions = run.tables["conversions"]
    rows = conversions[(conversions["photo_id"] == best) & (conversions["conversion_type"] == "download")
                       & (conversions["keyword"] != "")]
    counts = rows.groupby("keyword").size().reset_index(name="downloads")
    counts = counts.sort_values(["downloads", "keyword"], ascending=[False, True]).head(5)
    expected = [{"keyword": k, "downloads": int(d)} for k, d in zip(counts["keyword"], counts["downloads"], strict=True)]
    result = run_cli(capsys, "query", "popular_candidate_keywords", "--param", f"photo_id={target}", "--param", "k=10",
                     "--format", "json", "--data-dir", run.data_dir)
    assert result.code == 0, result.err
    assert result.json() == expected


def test_rerun_fetches_nothing_and_duplicates_nothing(run: Run, capsys, fixture_server) -> None:
    fixture_server.reset()
    for index, mode in BAD_IMAGES.items():
        fixture_server.set_image(run.ids[index], mode)
    result = run_cli(capsys, "run", "--source", run.url, "--model", run.model, "--data-dir", run.data_dir)
    assert result.code == 0, result.err
    image_requests = {path: n for path, n in fixture_server.requests.items() if path.startswith("/img/")}
    assert image_requests == {}
    with database(run.data_dir) as db:
        for table, count in table_counts(run.tables).items():
            assert db.count(table) == count, table
        assert db.count(run.store.table_name) == VECTORS
    embed = json.loads((run.data_dir / "reports" / "embed-latest.json").read_text())
    assert embed["out"] == 0 and embed["skipped"] == 40


def test_retry_failed_fetches_only_failed_photos(run: Run, capsys, fixture_server) -> None:
    fixture_server.reset()  # every image healthy now
    result = run_cli(capsys, "embed", "--model", run.model, "--retry-failed", "--data-dir", run.data_dir)
    assert result.code == 0, result.err
    fetched = sorted(p for p in fixture_server.requests if p.startswith("/img/"))
    failed = sorted(f"/img/{run.ids[i]}.jpg" for i, m in BAD_IMAGES.items() if m in FAILING)
    assert fetched == failed
    assert len(run.store.embedded_ids()) == 40
    assert run.store.failures().num_rows == 0


def test_status_json(run: Run, capsys) -> None:
    result = run_cli(capsys, "status", "--format", "json", "--data-dir", run.data_dir)
    assert result.code == 0, result.err
    rows = {(r["kind"], r["name"]): r for r in result.json()}
    assert rows[("table", "photos")]["rows"] == 40
    model_row = rows[("model", run.store.model)]
    assert model_row["rows"] >= VECTORS and "hnsw" in model_row["detail"].lower() or "vector_similarity" in model_row["detail"]


def test_sql_is_read_only_unless_asked(run: Run, capsys) -> None:
    result = run_cli(capsys, "sql", "SELECT count() AS n FROM photos WHERE photo_description = {d:String}",
                     "--param", f"d={HOSTILE_STRING}", "--format", "csv", "--data-dir", run.data_dir)
    assert result.code == 0 and result.out.splitlines() == ["n", "1"]
    result = run_cli(capsys, "sql", "DROP TABLE colors", "--data-dir", run.data_dir)
    assert result.code == 2 and "--write" in result.err
    with database(run.data_dir) as db:
        assert db.table_exists("colors")


def test_keyword_vectors_are_the_text_tower_of_every_distinct_keyword(run: Run) -> None:
    from pipeline.encoders import load_encoder

    keywords = sorted({k for k in run.tables["keywords"]["keyword"] if k.strip()})
    with database(run.data_dir) as db:
        table = db.query_arrow("SELECT keyword, embedding FROM keyword_vectors_" + run.store.slug + " ORDER BY keyword")
    assert table["keyword"].to_pylist() == keywords
    encoder = load_encoder(run.model, "cpu")
    expected = encoder.encode_text(keywords[:5])
    np.testing.assert_allclose(np.array(table["embedding"].to_pylist()[:5]), expected, atol=1e-5)


def _keyword_matrix(run: Run) -> tuple[list[str], np.ndarray]:
    with database(run.data_dir) as db:
        table = db.query_arrow("SELECT keyword, embedding FROM keyword_vectors_" + run.store.slug)
    return table["keyword"].to_pylist(), np.array(table["embedding"].to_pylist(), dtype=np.float64)


def test_similar_keywords_and_photo_tags_match_numpy(run: Run, capsys) -> None:
    names, matrix = _keyword_matrix(run)
    counts = run.tables["keywords"].groupby("keyword")["photo_id"].nunique()
    word = names[0]
    distances = 1 - matrix @ matrix[0] / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(matrix[0]))
    expected = sorted((d, n) for n, d in zip(names, distances, strict=True) if n != word)[:4]
    result = run_cli(capsys, "keywords", "--like", word, "-k", "4", "--format", "json", "--data-dir", run.data_dir)
    assert result.code == 0, result.err
    rows = result.json()
    assert [r["keyword"] for r in rows] == [n for _, n in expected]
    assert [r["photos"] for r in rows] == [int(counts.get(n, 0)) for _, n in expected]

    ids, vectors = run.vectors()
    photo = run.ids[0]
    vector = vectors[ids.index(photo)].astype(np.float64)
    distances = 1 - matrix @ vector / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(vector))
    expected = sorted((d, n) for n, d in zip(names, distances, strict=True))[:5]
    own = set(run.tables["keywords"][run.tables["keywords"]["photo_id"] == photo]["keyword"])
    result = run_cli(capsys, "keywords", f"--photo-id={photo}", "-k", "5", "--format", "json", "--data-dir", run.data_dir)
    assert result.code == 0, result.err
    rows = result.json()
    assert [r["keyword"] for r in rows] == [n for _, n in expected]
    assert [r["tagged"] for r in rows] == [n in own for _, n in expected]
    result = run_cli(capsys, "keywords", "--like", "a word no photo has", "-k", "2", "--format", "json",
                     "--data-dir", run.data_dir)
    assert result.code == 0 and len(result.json()) == 2  # encoded on the fly
