"""`clipsql search ... --png grid.png --html sheet.html`: contact sheets of the key and its results.

The PNG is checked pixel-wise: each tile must hold the photo ranked there (compared with the
source image file), in the order of an independent numpy kNN. The HTML page is parsed: one
figure per tile, scores as printed by `--format json`, images embedded as data: URIs.
"""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.contact_sheet import CAPTION, HEADER, PAD, PLACEHOLDER, TILE, Tile, render_html, tile_box
from tests.fixtures.web_data import WebData, build_web_data
from tests.helpers import TEST_ENV, env, exact_knn, run_cli

XSS = '<img src=x onerror="alert(1)">'


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path, fixture_server) -> WebData:
    with env(**TEST_ENV):
        return build_web_data(tmp_path_factory.mktemp("sheet"), tiny_clip_dir, n=30, seed=11,
                              image_base_url=fixture_server.image_base_url, http_photos=2, xss=XSS)


class Figures(HTMLParser):
    """The figures of a contact sheet page: class, label, image src, score text."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict] = []
        self._in_score = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "figure":
            self.figures.append({"class": values["class"], "label": values["data-label"], "src": None, "score": "",
                                 "text": ""})
        elif tag == "img" and self.figures:
            self.figures[-1]["src"] = values["src"]
        elif tag == "span" and values.get("class") == "score":
            self._in_score = True

    def handle_endtag(self, tag: str) -> None:
        self._in_score = False if tag == "span" else self._in_score

    def handle_data(self, data: str) -> None:
        if self.figures:
            self.figures[-1]["text"] += data
            if self._in_score:
                self.figures[-1]["score"] += data


def tile_pixels(sheet: Image.Image, index: int, columns: int, size: tuple[int, int]) -> np.ndarray:
    x, y = tile_box(index, columns)
    x += (TILE - size[0]) // 2
    y += (TILE - size[1]) // 2
    return np.asarray(sheet.crop((x, y, x + size[0], y + size[1])).convert("RGB"), dtype=np.float64)


def assert_tile_shows(sheet: Image.Image, index: int, columns: int, source: Path) -> None:
    expected = Image.open(source).convert("RGB")
    expected.thumbnail((TILE, TILE))
    got = tile_pixels(sheet, index, columns, expected.size)
    difference = np.abs(got - np.asarray(expected, dtype=np.float64)).mean()
    assert difference < 6, f"tile {index} differs from {source.name} by {difference:.1f}"


def test_photo_key_png_and_html_show_the_ranked_results(web: WebData, tmp_path: Path, capsys) -> None:
    ids, vectors = web.vectors()
    target = ids[3]
    png, page = tmp_path / "grid.png", tmp_path / "out" / "sheet.html"
    result = run_cli(capsys, "search", f"--photo-id={target}", "-k", "7", "--exact", "--format", "json",
                     "--png", png, "--html", page, "--data-dir", web.data_dir)
    assert result.code == 0, result.err
    assert f"contact sheet written to {png}" in result.err and f"contact sheet written to {page}" in result.err
    rows = result.json()
    expected = exact_knn(ids, vectors, vectors[3], 7, exclude=target)
    assert [r["photo_id"] for r in rows] == [i for i, _ in expected]

    sheet = Image.open(png)
    columns = 6
    assert sheet.size == (PAD + columns * (TILE + PAD), HEADER + PAD + 2 * (TILE + CAPTION + PAD))  # key + 7 tiles
    assert_tile_shows(sheet, 0, columns, web.image_path(target))
    for rank, row in enumerate(rows, start=1):
        assert_tile_shows(sheet, rank, columns, web.image_path(row["photo_id"]))
    key_x, key_y = tile_box(0, columns)
    assert sheet.convert("RGB").getpixel((key_x - 2, key_y + TILE // 2)) == (47, 111, 219)  # the key's frame

    parser = Figures()
    parser.feed(page.read_text(encoding="utf-8"))
    figures = parser.figures
    assert [f["class"] for f in figures] == ["key"] + ["result"] * 7
    assert [f["label"] for f in figures] == [target] + [r["photo_id"] for r in rows]
    assert [f["score"] for f in figures[1:]] == [f"cosine {r['distance']:.4f}" for r in rows]
    for figure in figures:
        assert figure["src"].startswith("data:image/jpeg;base64,")
        picture = Image.open(io.BytesIO(base64.b64decode(figure["src"].split(",", 1)[1])))
        assert picture.size == Image.open(web.image_path(figure["label"])).size


def test_text_key_tile_and_image_key(web: WebData, tmp_path: Path, capsys) -> None:
    png = tmp_path / "text.png"
    result = run_cli(capsys, "search", "--text", "a quiet lake", "-k", "3", "--format", "json", "--png", png,
                     "--html", tmp_path / "text.html", "--data-dir", web.data_dir)
    assert result.code == 0, result.err
    sheet = Image.open(png).convert("RGB")
    assert sheet.size[0] == PAD + 4 * (TILE + PAD)  # key + 3 results in one row
    x, y = tile_box(0, 4)
    assert sheet.getpixel((x + TILE - 5, y + TILE - 5)) == PLACEHOLDER  # a text key has no picture
    for rank, row in enumerate(result.json(), start=1):
        assert_tile_shows(sheet, rank, 4, web.image_path(row["photo_id"]))
    parser = Figures()
    parser.feed((tmp_path / "text.html").read_text(encoding="utf-8"))
    assert parser.figures[0]["src"] is None and '"a quiet lake"' in parser.figures[0]["text"]

    source = web.image_path(web.ids[8])
    result = run_cli(capsys, "search", "--image", source, "-k", "2", "--png", tmp_path / "image.png",
                     "--data-dir", web.data_dir)
    assert result.code == 0, result.err
    assert_tile_shows(Image.open(tmp_path / "image.png"), 0, 3, source)


def test_http_photos_come_from_the_cache_and_text_is_escaped(web: WebData, tmp_path: Path, capsys,
                                                            fixture_server) -> None:
    chosen = [*web.http_ids, web.ids[4]]  # photo 4 carries the hostile description
    before = sum(fixture_server.requests.values())
    page = tmp_path / "escaped.html"
    result = run_cli(capsys, "search", f"--photo-id={web.ids[0]}", "-k", "3", "--in", "ids:" + ",".join(chosen),
                     "--exact", "--html", page, "--png", tmp_path / "escaped.png", "--format", "json",
                     "--data-dir", web.data_dir)
    assert result.code == 0, result.err
    assert {r["photo_id"] for r in result.json()} == set(chosen)
    assert sum(fixture_server.requests.values()) == before  # cached thumbnails: no network
    text = page.read_text(encoding="utf-8")
    assert XSS not in text and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in text
    parser = Figures()
    parser.feed(text)
    assert all(f["src"] and f["src"].startswith("data:") for f in parser.figures)


def test_missing_pictures_get_a_placeholder_and_bad_names_are_refused(web: WebData, tmp_path: Path, capsys) -> None:
    ids, vectors = web.vectors()
    target = ids[6]
    first = exact_knn(ids, vectors, vectors[6], 1, exclude=target)[0][0]
    hidden = web.image_path(first).with_suffix(".hidden")
    web.image_path(first).rename(hidden)
    try:
        result = run_cli(capsys, "search", f"--photo-id={target}", "-k", "1", "--exact", "--png", tmp_path / "m.png",
                         "--html", tmp_path / "m.html", "--data-dir", web.data_dir)
    finally:
        hidden.rename(web.image_path(first))
    assert result.code == 0, result.err
    x, y = tile_box(1, 2)
    assert Image.open(tmp_path / "m.png").convert("RGB").getpixel((x + TILE - 5, y + TILE - 5)) == PLACEHOLDER
    assert "image unavailable" in (tmp_path / "m.html").read_text(encoding="utf-8")

    result = run_cli(capsys, "search", f"--photo-id={target}", "--png", tmp_path / "grid.jpg", "--data-dir",
                     web.data_dir)
    assert result.code == 2 and "--png" in result.err and "must end with .png" in result.err
    assert not (tmp_path / "grid.jpg").exists()
    result = run_cli(capsys, "search", "--photo-id=no-such", "--html", tmp_path / "x.html", "--data-dir", web.data_dir)
    assert result.code == 6 and not (tmp_path / "x.html").exists()


def test_range_sheet_title_and_json_stdout_stays_clean(web: WebData, tmp_path: Path, capsys) -> None:
    ids, vectors = web.vectors()
    result = run_cli(capsys, "search", f"--photo-id={ids[0]}", "--radius", "0.5", "--exact", "--format", "json",
                     "--html", tmp_path / "r.html", "--data-dir", web.data_dir)
    assert result.code == 0, result.err
    rows = json.loads(result.out)  # the sheet's messages went to stderr
    expected = [i for i, d in exact_knn(ids, vectors, vectors[0], len(ids), exclude=ids[0]) if d <= 0.5]
    assert [r["photo_id"] for r in rows] == expected
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"within cosine distance 0.5 to photo {ids[0]}" in text


def test_render_html_escapes_every_field(tmp_path: Path) -> None:
    tiles = [Tile("key", "text", XSS, "", None), Tile("#1", "cosine 0.1000", "a&b", XSS, Image.new("RGB", (4, 3)))]
    text = render_html(tiles, XSS, tmp_path / "t.html").read_text(encoding="utf-8")
    assert XSS not in text and "<img src=x" not in text
    # title, heading, the key's data-label, text and id, the result's alt text and caption: all escaped
    assert text.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") == 7
