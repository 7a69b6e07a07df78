"""End to end in headless Chromium: `clipsql serve` as a separate process, driven like a person.

The bundled sample (its first 48 photos, embedded with the tiny CLIP) is served by a real
uvicorn process on a loopback port; Playwright drives Debian's Chromium (`.ci/run` installs it;
Playwright's own browser download does not work offline). The journey: page and shuffle the
gallery, filter it, switch the metric and the predicate, pick a key image, read the ranked
results and the analytics chart, open a result large, make it the new key, search by text and
by an uploaded file, and hit bad input. Screenshots go to build/screenshots/.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from pipeline.resources import sample_dir
from tests.fixtures.vectors import quiet_cli

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHOTOS = 48


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("Debian's chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed here (apt-get install --no-install-recommends chromium)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[str]:
    root = tmp_path_factory.mktemp("e2e")
    data_dir = root / "data"
    assert quiet_cli("run", "--source", "sample", "--limit", PHOTOS, "--model", tiny_clip_dir, "--data-dir", data_dir) == 0
    port = free_port()
    log_path = root / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--port", str(port), "--data-dir",
                                    str(data_dir)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"clipsql serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{base}/api/models", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"clipsql serve did not answer within 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser) -> Iterator:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert not errors, f"JavaScript errors: {errors}"


def api(base: str, path: str, params: dict | list | None = None) -> dict:
    response = requests.get(base + path, params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def tile_ids(page) -> list[str]:
    return page.locator("#gallery a.tile").evaluate_all("tiles => tiles.map(t => t.dataset.photoId)")


def result_rows(page) -> list[tuple[str, float]]:
    return page.locator("#results a.result").evaluate_all(
        "cards => cards.map(c => [c.dataset.photoId, Number(c.dataset.distance)])")


def test_pick_a_key_change_the_predicate_open_a_result(server: str, page) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(server + "/")
    first_page = api(server, "/api/gallery")
    assert tile_ids(page) == [p["photo_id"] for p in first_page["photos"]]
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(SCREENSHOTS / "start.png"), full_page=True)

    # The gallery pages, shuffles and filters in place, through the JSON API.
    page.click("#gallery-next")
    page.wait_for_function("document.querySelector('#gallery').dataset.page === '2'")
    assert tile_ids(page) == [p["photo_id"] for p in api(server, "/api/gallery", {"page": 2})["photos"]]
    assert page.inner_text("#gallery-status") == f"page 2 of 2 · {PHOTOS} photos"
    page.click("#gallery-shuffle")
    page.wait_for_function("document.querySelector('#gallery').dataset.seed !== '0'")
    seed = page.get_attribute("#gallery", "data-seed")
    shuffled = tile_ids(page)
    assert shuffled == [p["photo_id"] for p in api(server, "/api/gallery", {"seed": seed})["photos"]]
    assert shuffled != [p["photo_id"] for p in first_page["photos"]]
    page.fill("#gallery-filter", "animals")
    page.click("#gallery-apply")
    page.wait_for_function("!document.querySelector('#gallery').classList.contains('loading')")
    filtered = api(server, "/api/gallery", {"q": "animals", "seed": seed})
    assert tile_ids(page) == [p["photo_id"] for p in filtered["photos"]] and 0 < filtered["total"] < PHOTOS

    # Switch the metric: the threshold keeps its meaning (L2 = sqrt(2 x cosine distance)).
    page.check("input[name=metric][value=l2]")
    assert float(page.input_value("#radius")) == pytest.approx(math.sqrt(2 * 0.3), abs=0.005)
    key = tile_ids(page)[0]
    distances = [r["distance"] for r in api(server, "/api/search", {"photo_id": key, "k": PHOTOS - 1,
                                                                      "metric": "l2"})["results"]]
    page.check("input[name=predicate][value=range]")
    wanted = sorted(distances)[len(distances) // 3]
    page.eval_on_selector("#radius", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                          f"{wanted:.3f}")
    radius = float(page.input_value("#radius"))  # the slider snaps to its step
    assert page.inner_text("#radius-value") == f"{radius:.3f}"

    # Pick the key image: the results page keeps every setting.
    page.click(f"#gallery a.tile[data-photo-id='{key}']")
    page.wait_for_url("**/search?**")
    query = parse_qs(urlsplit(page.url).query)
    assert query["photo_id"] == [key] and query["metric"] == ["l2"] and query["predicate"] == ["range"]
    expected = api(server, "/api/search", {"photo_id": key, "metric": "l2", "predicate": "range", "radius": radius})
    rows = result_rows(page)
    assert [r[0] for r in rows] == [r["photo_id"] for r in expected["results"]] and rows
    assert all(d <= radius + 1e-9 for _, d in rows)
    assert page.inner_text("#predicate-fact") == f"range: l2 distance ≤ {radius:.3f}"
    assert page.get_attribute("#key-image", "src") == f"/thumbs/{key}?size=large"
    assert page.is_checked("input[name=metric][value=l2]") and page.is_checked("input[name=predicate][value=range]")

    # The analytics chart: one bar per result, the most downloaded highlighted.
    page.wait_for_selector("#analytics[data-ready=yes]")
    analytics = api(server, "/api/analytics", [("ids", r[0]) for r in rows])
    bars = page.locator("#chart-downloads g.bar")
    assert bars.count() == len(rows)
    assert bars.evaluate_all("bars => bars.map(b => Number(b.dataset.value))") == [
        d["downloads"] for d in analytics["downloads"]]
    highlighted = page.locator("#chart-downloads g.bar.highlight").get_attribute("data-label")
    assert highlighted.endswith(analytics["most_downloaded"])
    assert page.locator("#chart-keywords g.bar").count() == len(analytics["keywords"])

    # Change the predicate on the results page: kNN with k = 5.
    page.check("input[name=predicate][value=knn]")
    page.fill("#k", "5")
    page.click("#update")
    page.wait_for_url("**predicate=knn**")
    rows = result_rows(page)
    assert [r[0] for r in rows] == [r["photo_id"] for r in api(server, "/api/search", {
        "photo_id": key, "metric": "l2", "k": 5})["results"]]

    # Open a result large, read its metadata, make it the new key.
    second = rows[1][0]
    page.click(f"#results a.result[data-photo-id='{second}']")
    page.wait_for_selector("#dialog-facts dd[data-fact=downloads]")
    info = api(server, f"/api/photos/{second}")
    assert page.inner_text("#dialog-facts dd[data-fact=downloads]") == str(info["downloads"])
    assert page.inner_text("#dialog-facts dd[data-fact=keywords]") == ", ".join(info["keywords"])
    page.wait_for_function("document.querySelector('#dialog-image').naturalWidth > 0")
    page.screenshot(path=str(SCREENSHOTS / "photo.png"))
    page.click("#dialog-make-key")
    page.wait_for_url(f"**photo_id={second}**")
    new_rows = result_rows(page)
    assert len(new_rows) == 5 and second not in [r[0] for r in new_rows]
    assert [r[0] for r in new_rows] == [r["photo_id"] for r in api(server, "/api/search", {
        "photo_id": second, "metric": "l2", "k": 5})["results"]]
    page.wait_for_selector("#analytics[data-ready=yes]")
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(SCREENSHOTS / "results.png"), full_page=True)


def test_search_by_text_and_by_upload(server: str, page) -> None:
    page.goto(server + "/?k=4")
    page.fill("#text", "a red house")
    page.press("#text", "Enter")
    page.wait_for_url("**mode=text**")
    assert page.inner_text("#key-text") == "“a red house”"
    expected = api(server, "/api/search", {"text": "a red house", "k": 4})
    assert [r[0] for r in result_rows(page)] == [r["photo_id"] for r in expected["results"]]

    image = sorted((sample_dir() / "images").glob("*.jpg"))[0]
    page.click("details.other-queries summary")  # on the results page the new-search row starts folded
    page.set_input_files("#file", str(image))
    page.click("#search-upload")
    page.wait_for_url("**upload=**")
    upload = parse_qs(urlsplit(page.url).query)["upload"][0]
    assert page.get_attribute("#key-image", "src") == f"/uploads/{upload}?size=large"
    page.wait_for_function("document.querySelector('#key-image').naturalWidth > 0")
    assert len(result_rows(page)) == 4


def test_bad_input_shows_a_message_not_a_stack_trace(server: str, page) -> None:
    response = page.goto(server + "/search?photo_id=no-such-photo")
    assert response.status == 404
    assert page.inner_text("#error-message") == "photo id 'no-such-photo' is not in the photos table"
    response = page.goto(server + "/?predicate=range&radius=7")
    assert response.status == 422 and "radius: Input should be less than or equal to 2" in page.inner_text(
        "#error-message")
    page.goto(server + "/")
    page.set_input_files("#file", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"})
    page.click("#search-upload")
    page.wait_for_selector("#error-message")
    assert "not a usable image" in page.inner_text("#error-message")
    assert "Traceback" not in page.content()
