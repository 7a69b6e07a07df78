"""`clipsql serve --workers N`: each worker process builds its app from the CLIPSQL_* environment.

A separate module because the worker runs in a subprocess against its own database, and this
process must not hold a chDB database of its own meanwhile (one chDB path per process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.vectors import build_vector_db
from tests.helpers import exact_knn

WORKER = """
import sys
from fastapi.testclient import TestClient
from pipeline.web.server import app_from_environment
app = app_from_environment()
client = TestClient(app)
print(client.get("/api/models").text)
print(client.get("/api/search", params={"photo_id": sys.argv[1], "k": 3, "method": "exact"}).text)
print(client.get("/api/gallery", params={"per_page": 5}).text)
app.state.backend.close()
"""


def test_worker_processes_build_the_app_from_the_environment(tmp_path: Path) -> None:
    vectors = build_vector_db(tmp_path, n=60, dim=8, clusters=3)
    env = {**os.environ, "CLIPSQL_DATA_DIR": str(vectors.data_dir), "CLIPSQL_SERVE_MODEL": vectors.model}
    result = subprocess.run([sys.executable, "-c", WORKER, vectors.ids[0]], capture_output=True, text=True,
                            timeout=120, env=env, cwd=Path(__file__).resolve().parent.parent, check=False)
    assert result.returncode == 0, result.stderr
    models, found, gallery = (json.loads(line) for line in result.stdout.strip().splitlines()[-3:])
    assert [m["name"] for m in models] == [vectors.model] and models[0]["vectors"] == 60
    expected = exact_knn(vectors.ids, vectors.vectors, vectors.vectors[0], 3, exclude=vectors.ids[0])
    assert [r["photo_id"] for r in found["results"]] == [i for i, _ in expected]
    assert [p["photo_id"] for p in gallery["photos"]] == sorted(vectors.ids)[:5] and gallery["total"] == 60
