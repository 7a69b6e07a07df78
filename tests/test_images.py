"""Getting images: safe decoding of hostile bytes, and the fetcher against the loopback fixture server.

Everything goes through the real code: real PIL decoding of files built here byte by byte, real
HTTP to the fixture server (and, for two misbehaviours it cannot produce, a raw loopback socket).
"""

from __future__ import annotations

import hashlib
import io
import random
import resource
import socket
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipeline.images as images
from pipeline.images import THUMBNAIL_PARAMS, ImageError, ImageFetcher, decode_image, thumbnail_url
from tests.fixtures.server import FixtureServer
from tests.fixtures.unsplash import image_bytes

WHITE = (255, 255, 255)


# -- building test images ------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    """A PNG written chunk by chunk, so its header can claim any size without a pixel buffer."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@lru_cache(maxsize=1)
def bomb_png() -> bytes:
    """A complete, valid 20000x20000 1-bit PNG (400 M pixels) in ~50 kB: every row is black."""
    row = bytes(1 + 20000 // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(20000)) + compressor.flush()
    return png_bytes(20000, 20000, 1, 0, idat)


def header_only_png(width: int, height: int) -> bytes:
    """An 8-bit RGB PNG header claiming width x height, with one row of data: cheap at any size."""
    return png_bytes(width, height, 8, 2, zlib.compress(bytes(1 + 3 * width)))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 marker is patched to claim width x height."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (10, 20, 30)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def noise_jpeg(size: tuple[int, int] = (256, 256)) -> bytes:
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)), "JPEG", quality=90)


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def decode_error(data: bytes, target: int = 224) -> ImageError:
    with pytest.raises(ImageError) as caught:
        decode_image(data, target)
    return caught.value


# -- decode_image: every mode becomes RGB ------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb_with_the_right_colours() -> None:
    quadrants = {(0, 0): (255, 0, 0, 0), (32, 0): (0, 255, 0, 0), (0, 32): (0, 0, 255, 0), (32, 32): (0, 0, 0, 255)}
    expected = {(0, 0): (0, 255, 255), (32, 0): (255, 0, 255), (0, 32): (255, 255, 0), (32, 32): (0, 0, 0)}
    cmyk = Image.new("CMYK", (64, 64))
    for (x, y), ink in quadrants.items():
        cmyk.paste(ink, (x, y, x + 32, y + 32))
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"  # the input really is CMYK
    image = decode_image(data)
    assert image.mode == "RGB" and image.size == (64, 64)
    for (x, y), rgb in expected.items():
        pixel = image.getpixel((x + 16, y + 16))
        assert close_to(pixel, rgb, 6), ((x, y), pixel, rgb)


def test_grayscale_png_and_jpeg_become_rgb() -> None:
    gray = Image.new("L", (8, 8), 77)
    gray.putpixel((3, 3), 200)
    image = decode_image(encode(gray, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (77, 77, 77) and image.getpixel((3, 3)) == (200, 200, 200)
    image = decode_image(encode(Image.new("L", (16, 16), 100), "JPEG", quality=95))
    assert image.mode == "RGB" and close_to(image.getpixel((8, 8)), (100, 100, 100), 1)


def test_16_bit_grayscale_png_is_scaled_to_8_bits() -> None:
    values = np.array([[0, 0x4000, 0x8000, 0xFFFF]] * 2, dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    image = decode_image(data)
    assert image.mode == "RGB"
    for x, level in enumerate((0, 64, 128, 255)):
        assert close_to(image.getpixel((x, 1)), (level,) * 3, 1), (x, image.getpixel((x, 1)))


def test_bilevel_png_becomes_black_and_white_rgb() -> None:
    bilevel = Image.new("1", (8, 8), 0)
    bilevel.putpixel((2, 2), 1)
    image = decode_image(encode(bilevel, "PNG"))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((2, 2)) == WHITE


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_puts_transparent_pixels_on_white(fmt: str) -> None:
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 200, 30, 40, 10, 90, 250] + [0] * (256 - 3) * 3)
    palette.putpixel((1, 1), 1)
    palette.putpixel((2, 2), 2)
    data = encode(palette, fmt, transparency=0)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "P" and opened.info.get("transparency") == 0
    image = decode_image(data)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == WHITE  # index 0 is transparent black: white, not black
    assert image.getpixel((1, 1)) == (200, 30, 40) and image.getpixel((2, 2)) == (10, 90, 250)


def test_palette_without_transparency_keeps_its_colours() -> None:
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 12, 34, 56] + [0] * 254 * 3)
    assert decode_image(encode(palette, "PNG")).getpixel((0, 0)) == (12, 34, 56)


def test_rgba_png_composites_on_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 0))  # fully transparent, with a dark colour underneath
    rgba.putpixel((1, 1), (10, 20, 30, 255))
    rgba.putpixel((2, 2), (0, 0, 0, 128))
    image = decode_image(encode(rgba, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((1, 1)) == (10, 20, 30)
    assert close_to(image.getpixel((2, 2)), (127, 127, 127), 1)  # half transparent black on white is grey


def test_rgba_webp_composites_on_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((3, 3), (250, 0, 0, 255))
    image = decode_image(encode(rgba, "WEBP", lossless=True))
    assert image.getpixel((0, 0)) == WHITE and image.getpixel((3, 3)) == (250, 0, 0)


def test_la_png_composites_on_white() -> None:
    la = Image.new("LA", (8, 8), (0, 0))
    la.putpixel((1, 1), (40, 255))
    image = decode_image(encode(la, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == WHITE and image.getpixel((1, 1)) == (40, 40, 40)


@pytest.mark.parametrize("mode,key,opaque", [("L", 0, (90, 90, 90)), ("RGB", (0, 0, 0), (200, 10, 10))])
def test_colour_keyed_png_transparency_becomes_white(mode: str, key, opaque: tuple[int, int, int]) -> None:
    image = Image.new(mode, (4, 4), key)
    image.putpixel((1, 1), opaque[0] if mode == "L" else opaque)
    data = encode(image, "PNG", transparency=key)
    assert Image.open(io.BytesIO(data)).info["transparency"] == key  # the file does mark black as transparent
    decoded = decode_image(data)
    assert decoded.getpixel((1, 1)) == opaque
    assert decoded.getpixel((0, 0)) == WHITE


def test_big_endian_16_bit_tiff_decodes_or_raises_image_error() -> None:
    values = np.array([[0, 0x8000], [0xFFFF, 0x4000]], dtype=">u2")
    tiff = encode(Image.frombytes("I;16B", (2, 2), values.tobytes()), "TIFF")
    assert Image.open(io.BytesIO(tiff)).mode == "I;16B"
    try:
        image = decode_image(tiff)
    except ImageError:
        return
    assert image.mode == "RGB" and close_to(image.getpixel((1, 0)), (128, 128, 128), 1)


# -- decode_image: hostile and broken bytes --------------------------------------------------------


def test_decompression_bomb_png_is_refused_before_allocation() -> None:
    data = bomb_png()
    assert len(data) < 100_000  # 400 M pixels in a few tens of kB
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    error = decode_error(data)
    elapsed = time.perf_counter() - started
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024  # ru_maxrss is in kB
    assert error.reason == "decompression_bomb"
    assert elapsed < 0.2, elapsed
    assert rss_growth_mb < 100, rss_growth_mb  # decoding it would take 400 MB (mode 1) and 1.2 GB (RGB)


@pytest.mark.parametrize(
    "data,name",
    [
        (header_only_png(10_000, 10_000), "PNG 100 M pixels (over clipsql's limit, under Pillow's own error)"),
        (header_only_png(65_535, 65_535), "PNG 4 G pixels"),
        (jpeg_claiming(60_000, 60_000), "JPEG 3.6 G pixels"),
    ],
)
def test_header_claiming_too_many_pixels_is_a_bomb(data: bytes, name: str) -> None:
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        error = decode_error(data)
    assert error.reason == "decompression_bomb", name
    assert time.perf_counter() - started < 0.2, name


def test_limit_is_clipsqls_not_pillows_default() -> None:
    assert images.MAX_PIXELS == 80_000_000
    assert Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert decode_error(header_only_png(9_000, 9_000)).reason == "decompression_bomb"  # 81 M pixels


def test_truncated_jpeg() -> None:
    data = noise_jpeg()
    assert decode_image(data).size == (256, 256)
    for cut in (len(data) // 2, len(data) - 100, 400):
        error = decode_error(data[:cut])
        assert error.reason == "truncated_image", (cut, error)


def test_truncated_png() -> None:
    rng = np.random.default_rng(1)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG")
    assert decode_error(data[: len(data) // 2]).reason == "truncated_image"


def test_random_bytes_are_not_an_image() -> None:
    noise = random.Random(7).randbytes(4096)
    error = decode_error(noise)
    assert error.reason == "not_an_image" and error.detail == "4096 bytes"


@pytest.mark.parametrize("page", [
    b"<!doctype html><html><head><title>Sign in</title></head><body></body></html>",
    b"\n  <!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"><html></html>",
    b"<HTML><BODY>Access denied</BODY></HTML>",
])
def test_html_page_is_not_an_image_and_says_so(page: bytes) -> None:
    error = decode_error(page)
    assert error.reason == "not_an_image" and error.detail == "HTML page"


def test_empty_body_is_not_an_image_of_zero_bytes() -> None:
    error = decode_error(b"")
    assert error.reason == "not_an_image" and error.detail == "0 bytes"
    assert str(error) == "not_an_image: 0 bytes"


def test_damaged_images_only_ever_raise_image_error() -> None:
    """Bytes flipped in the headers and bodies of real files: an RGB image or an ImageError, nothing else."""
    rng = random.Random(0)
    source = Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    originals = {fmt: encode(source if fmt != "GIF" else source.convert("P"), fmt)
                 for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP")}
    reasons = set()
    for fmt, original in originals.items():
        for _ in range(120):
            damaged = bytearray(original)
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(min(len(damaged), 200)) if rng.random() < 0.7 else rng.randrange(len(damaged))
                damaged[position] = rng.randrange(256)
            if rng.random() < 0.2:
                damaged = damaged[: rng.randrange(len(damaged))]
            try:
                image = decode_image(bytes(damaged))
            except ImageError as exc:
                reasons.add(exc.reason)
            else:
                assert image.mode == "RGB", fmt
    assert {"not_an_image", "truncated_image", "decode_error"} <= reasons
    assert reasons <= {"not_an_image", "truncated_image", "decode_error", "decompression_bomb"}


def test_zero_sized_image_is_a_decode_error() -> None:
    error = decode_error(header_only_png(0, 10))
    assert error.reason in ("decode_error", "not_an_image")


# -- decode_image: JPEG draft mode ----------------------------------------------------------------


def test_large_jpeg_is_decoded_small_and_fast() -> None:
    gradient = Image.linear_gradient("L").resize((3000, 2000))
    big = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_TOP_BOTTOM), Image.new("L", (3000, 2000), 90)))
    data = encode(big, "JPEG", quality=90)
    started = time.perf_counter()
    image = decode_image(data, 224)
    elapsed = time.perf_counter() - started
    assert image.mode == "RGB"
    assert 224 <= min(image.size) < 2000, image.size
    assert image.size == (375, 250)  # 1/8 scale: the largest JPEG reduction that keeps >= 224
    assert elapsed < 0.25, elapsed
    # the picture survives the reduction: top row dark red channel, bottom row bright
    assert image.getpixel((187, 2))[0] < 20 and image.getpixel((187, 247))[0] > 235
    assert close_to(image.getpixel((187, 125))[2:], (90,), 3)


@pytest.mark.parametrize("size", [(3000, 500), (500, 3000), (449, 449), (447, 447), (300, 200), (224, 224), (64, 48)])
def test_jpeg_draft_never_goes_below_the_target(size: tuple[int, int]) -> None:
    data = encode(Image.new("RGB", size, (30, 60, 90)), "JPEG")
    image = decode_image(data, 224)
    width, height = image.size
    assert min(width, height) >= min(224, *size), (size, image.size)
    assert abs(width / height - size[0] / size[1]) < 0.05, (size, image.size)


def test_cmyk_and_grayscale_jpeg_drafts_keep_their_colours() -> None:
    cmyk = decode_image(encode(Image.new("CMYK", (3000, 2000), (0, 255, 0, 0)), "JPEG", quality=95))
    assert cmyk.mode == "RGB" and min(cmyk.size) >= 224 and cmyk.size[0] < 3000
    assert close_to(cmyk.getpixel((10, 10)), (255, 0, 255), 6)
    gray = decode_image(encode(Image.new("L", (2000, 3000), 100), "JPEG", quality=95))
    assert gray.mode == "RGB" and min(gray.size) >= 224 and gray.size[1] < 3000
    assert close_to(gray.getpixel((10, 10)), (100, 100, 100), 1)


def test_png_is_not_reduced() -> None:
    image = decode_image(encode(Image.new("RGB", (1000, 800), (1, 2, 3)), "PNG"))
    assert image.size == (1000, 800)


# -- thumbnail_url --------------------------------------------------------------------------------


def test_thumbnail_url_parameters() -> None:
    assert THUMBNAIL_PARAMS == "q=75&fm=jpg&w=200&fit=max"
    assert thumbnail_url("https://images.unsplash.com/photo-1") == "https://images.unsplash.com/photo-1?q=75&fm=jpg&w=200&fit=max"
    assert thumbnail_url("http://cdn.example/a.jpg") == "http://cdn.example/a.jpg?q=75&fm=jpg&w=200&fit=max"
    assert (thumbnail_url("https://images.unsplash.com/photo-1?ixid=abc&ixlib=rb-1.2.1")
            == "https://images.unsplash.com/photo-1?ixid=abc&ixlib=rb-1.2.1&q=75&fm=jpg&w=200&fit=max")


@pytest.mark.parametrize("local", ["file:///data/images/a.jpg", "/data/images/a.jpg", "images/a.jpg", "~/a.jpg",
                                   "file:///x.jpg?y=1"])
def test_thumbnail_url_leaves_local_images_alone(local: str) -> None:
    assert thumbnail_url(local) == local


# -- ImageFetcher over HTTP -----------------------------------------------------------------------


@pytest.fixture
def fetcher(tmp_path: Path) -> ImageFetcher:
    return ImageFetcher(tmp_path / "cache", timeout=2, retries=1, pool_size=4)


def _fetch_error(fetcher: ImageFetcher, url: str) -> ImageError:
    with pytest.raises(ImageError) as caught:
        fetcher.fetch(url)
    return caught.value


def test_fetch_ok_returns_bytes_hash_and_caches(fetcher: ImageFetcher, fixture_server: FixtureServer) -> None:
    url = fixture_server.image_url("photo-ok")
    first = fetcher.fetch(url)
    assert first.data == image_bytes("photo-ok")
    assert first.sha256 == hashlib.sha256(first.data).hexdigest()
    assert first.from_cache is False
    assert fetcher.cache_path(url).read_bytes() == first.data
    assert fetcher.cache_path(url).is_relative_to(fetcher.cache_dir)
    second = fetcher.fetch(url)
    assert (second.data, second.sha256, second.from_cache) == (first.data, first.sha256, True)
    # a new fetcher on the same cache directory (a later run) does not download either
    later = ImageFetcher(fetcher.cache_dir, timeout=2, retries=0)
    third = later.fetch(url)
    assert (third.data, third.sha256, third.from_cache) == (first.data, first.sha256, True)
    assert fixture_server.requests["/img/photo-ok.jpg"] == 1
    assert fetcher.network_requests == 1 and later.network_requests == 0


def test_evict_makes_the_next_fetch_download_again(fetcher: ImageFetcher, fixture_server: FixtureServer) -> None:
    url = fixture_server.image_url("photo-evict")
    fetcher.fetch(url)
    fetcher.evict(url)
    assert fetcher.cached(url) is None
    assert fetcher.fetch(url).from_cache is False
    assert fixture_server.requests["/img/photo-evict.jpg"] == 2
    fetcher.evict(fixture_server.image_url("never-fetched"))  # no error


def test_404_is_not_retried(fetcher: ImageFetcher, fixture_server: FixtureServer) -> None:
    fixture_server.set_image("photo-404", "404")
    url = fixture_server.image_url("photo-404")
    error = _fetch_error(fetcher, url)
    assert error.reason == "http_404"
    assert fixture_server.requests["/img/photo-404.jpg"] == 1 and fetcher.network_requests == 1
    assert fetcher.cached(url) is None


def test_500_is_retried_then_reported(fetcher: ImageFetcher, fixture_server: FixtureServer) -> None:
    fixture_server.set_image("photo-500", "500")
    url = fixture_server.image_url("photo-500")
    error = _fetch_error(fetcher, url)
    assert error.reason == "http_500"
    assert fixture_server.requests["/img/photo-500.jpg"] == 1 + fetcher.retries == 2
    assert fetcher.cached(url) is None


def test_flaky_succeeds_on_the_third_request(tmp_path: Path, fixture_server: FixtureServer) -> None:
    fixture_server.set_image("photo-flaky", "flaky")
    fetcher = ImageFetcher(tmp_path, timeout=2, retries=3)
    fetched = fetcher.fetch(fixture_server.image_url("photo-flaky"))
    assert fetched.data == image_bytes("photo-flaky") and not fetched.from_cache
    assert fixture_server.requests["/img/photo-flaky.jpg"] == 3


def test_flaky_with_too_few_retries_reports_the_503(tmp_path: Path, fixture_server: FixtureServer) -> None:
    fixture_server.set_image("photo-flaky", "flaky")
    error = _fetch_error(ImageFetcher(tmp_path, timeout=2, retries=1), fixture_server.image_url("photo-flaky"))
    assert error.reason == "http_503"
    assert fixture_server.requests["/img/photo-flaky.jpg"] == 2


def test_hang_times_out_after_each_attempt(tmp_path: Path, fixture_server: FixtureServer) -> None:
    fixture_server.set_image("photo-hang", "hang")
    fetcher = ImageFetcher(tmp_path, timeout=1, retries=1)
    started = time.perf_counter()
    error = _fetch_error(fetcher, fixture_server.image_url("photo-hang"))
    elapsed = time.perf_counter() - started
    assert error.reason == "timeout" and "1 s" in error.detail
    assert fixture_server.requests["/img/photo-hang.jpg"] == 2
    # (retries + 1) x 1 s, plus the 0.25 s backoff between the two attempts
    assert (fetcher.retries + 1) * 1.0 <= elapsed < (fetcher.retries + 1) * 1.0 + 1.5, elapsed


def test_redirect_loop_is_not_retried(fetcher: ImageFetcher, fixture_server: FixtureServer) -> None:
    fixture_server.set_image("photo-loop", "redirect_loop")
    error = _fetch_error(fetcher, fixture_server.image_url("photo-loop"))
    assert error.reason == "redirect_loop"
    assert fetcher.network_requests == 1
    assert fixture_server.requests["/img/photo-loop.jpg"] == fetcher.session.max_redirects + 1


def test_non_images_are_fetched_as_bytes_for_decode_to_judge(fetcher: ImageFetcher, fixture_server: FixtureServer) -> None:
    fixture_server.set_image("photo-html", "html")
    fixture_server.set_image("photo-trunc", "truncated")
    html = fetcher.fetch(fixture_server.image_url("photo-html")).data
    assert decode_error(html).detail == "HTML page"
    truncated = fetcher.fetch(fixture_server.image_url("photo-trunc")).data
    assert truncated == image_bytes("photo-trunc")[: len(image_bytes("photo-trunc")) // 2]
    assert decode_error(truncated).reason == "truncated_image"


def test_served_cmyk_and_bomb_bytes_round_trip(fetcher: ImageFetcher, fixture_server: FixtureServer) -> None:
    cmyk = encode(Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "JPEG", quality=95)
    fixture_server.set_image_bytes("photo-cmyk", cmyk)
    fixture_server.set_image_bytes("photo-bomb", bomb_png(), "image/png")
    assert close_to(decode_image(fetcher.fetch(fixture_server.image_url("photo-cmyk")).data).getpixel((16, 16)),
                    (0, 255, 255), 6)
    assert decode_error(fetcher.fetch(fixture_server.image_url("photo-bomb")).data).reason == "decompression_bomb"


def test_body_over_max_bytes_is_too_large(fetcher: ImageFetcher, fixture_server: FixtureServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_BYTES", 500)
    assert len(image_bytes("photo-big")) > 500
    url = fixture_server.image_url("photo-big")
    error = _fetch_error(fetcher, url)
    assert error.reason == "too_large"
    assert fixture_server.requests["/img/photo-big.jpg"] == 1 and fetcher.cached(url) is None


def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fetcher = ImageFetcher(tmp_path, timeout=1, retries=1)
    error = _fetch_error(fetcher, f"http://127.0.0.1:{port}/img/x.jpg")
    assert error.reason == "connection_error"
    assert fetcher.network_requests == 2


def test_thumbnail_query_reaches_the_server(fetcher: ImageFetcher, fixture_server: FixtureServer) -> None:
    fetcher.fetch(thumbnail_url(fixture_server.image_url("photo-q")))
    fetcher.fetch(thumbnail_url(fixture_server.image_url("photo-r") + "?ixid=abc"))
    assert fixture_server.queries == [("/img/photo-q.jpg", THUMBNAIL_PARAMS),
                                      ("/img/photo-r.jpg", f"ixid=abc&{THUMBNAIL_PARAMS}")]


def test_unsupported_scheme_is_a_bad_url(fetcher: ImageFetcher) -> None:
    assert _fetch_error(fetcher, "ftp://example.com/a.jpg").reason == "bad_url"
    assert fetcher.network_requests == 0


def test_connection_dropped_mid_body_is_retried(fetcher: ImageFetcher, fixture_server: FixtureServer) -> None:
    data = image_bytes("photo-cut")
    url = fixture_server.add_file("photo-cut.jpg", data)
    fixture_server.truncate_next("photo-cut.jpg", 100)  # announce all of it, send 100 bytes, hang up
    fetched = fetcher.fetch(url)
    assert fetched.data == data
    assert fixture_server.requests["/data/photo-cut.jpg"] == 2


@pytest.fixture
def bad_length_server() -> Iterator[str]:
    """A raw loopback HTTP server whose Content-Length header is not a number (the fixture server
    always sends a valid one)."""
    body = image_bytes("photo-bad-length")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(2)
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: abc\r\n"
                                   b"Connection: close\r\n\r\n" + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/img/photo-bad-length.jpg"
    stop.set()
    thread.join(timeout=2)
    listener.close()


def test_malformed_content_length_is_not_a_crash(tmp_path: Path, bad_length_server: str) -> None:
    fetcher = ImageFetcher(tmp_path, timeout=2, retries=0)
    try:
        fetched = fetcher.fetch(bad_length_server)
    except ImageError:
        return
    assert fetched.data == image_bytes("photo-bad-length")


# -- ImageFetcher on local files ------------------------------------------------------------------


def test_file_urls_and_paths_read_local_files(tmp_path: Path, fetcher: ImageFetcher,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "a folder with spaces" / "東京"
    folder.mkdir(parents=True)
    path = folder / "café #1.jpg"
    data = image_bytes("local")
    path.write_bytes(data)
    monkeypatch.chdir(tmp_path)
    for source in (path.as_uri(), str(path), "a folder with spaces/東京/café #1.jpg"):
        fetched = fetcher.fetch(source)
        assert fetched.data == data, source
        assert fetched.sha256 == hashlib.sha256(data).hexdigest()
        assert fetched.from_cache is True, source  # local files are never copied into the cache
    assert fetcher.network_requests == 0
    assert not fetcher.cache_dir.exists()


def test_missing_local_file_is_not_found(tmp_path: Path, fetcher: ImageFetcher) -> None:
    missing = tmp_path / "nope.jpg"
    for source in (missing.as_uri(), str(missing)):
        error = _fetch_error(fetcher, source)
        assert error.reason == "not_found" and str(missing) in error.detail


def test_directory_is_unreadable_not_a_crash(tmp_path: Path, fetcher: ImageFetcher) -> None:
    assert _fetch_error(fetcher, str(tmp_path)).reason == "unreadable"
