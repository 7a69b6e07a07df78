"""Shared pytest fixtures. The test machine has no internet: data, images and the model all come
from `tests/fixtures/` and a loopback server."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Never let transformers / huggingface_hub try the network; set before anything imports them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Make `pipeline` and `tests.fixtures` importable however pytest is launched (`pytest` or `python -m pytest`).
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.fixtures.server import FixtureServer  # noqa: E402
from tests.fixtures.tiny_clip import build_tiny_clip  # noqa: E402
from tests.fixtures.unsplash import UNSPLASH_ZIP_NAME, UnsplashZip, make_dataset, write_zip  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP model directory, built once per session (from_pretrained-loadable)."""
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def fixture_server() -> Iterator[FixtureServer]:
    """One loopback HTTP server for the session; failure modes are reset before each test that uses it."""
    with FixtureServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_fixture_server(request: pytest.FixtureRequest) -> None:
    """Keep tests independent although the server is shared: each test that uses it starts with an
    empty request log and no failure modes (registered files stay)."""
    if "fixture_server" in request.fixturenames:
        request.getfixturevalue("fixture_server").reset()


@pytest.fixture
def unsplash_zip(tmp_path: Path, fixture_server: FixtureServer) -> UnsplashZip:
    """make_dataset(40) with images on the fixture server, zipped, served and copied locally."""
    tables = make_dataset(40, image_base_url=fixture_server.image_base_url)
    path = write_zip(tables, tmp_path / UNSPLASH_ZIP_NAME)
    url = fixture_server.add_file(UNSPLASH_ZIP_NAME, path.read_bytes())
    return UnsplashZip(url=url, tables=tables, path=path)
