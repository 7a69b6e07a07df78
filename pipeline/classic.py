"""Encoders that need no learning: colour histograms, raw pixels and the perceptual hash.

They are the baselines of the seed systems (a colour histogram and a pixel vector are what a
"from scratch" search engine starts with; a perceptual hash is enough for near-identical images)
and they are what a learned model has to beat in `clipsql eval`. All run in numpy on the CPU,
need no weights, and return L2-normalised float32 vectors like every other encoder, so their
vectors are loaded, indexed and searched with the same cosine distance.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .encoders import Encoder, normalise
from .phash import HASH_BITS, phash_bits

COLOR_HISTOGRAM = "color-histogram"
PIXELS = "pixels"
PHASH = "phash"
HISTOGRAM_BINS = 32  # per channel: 32 x 3 = 96 dimensions
PIXEL_SIZE = 32  # pixel vectors are 32 x 32 x 3 = 3072 values, the CIFAR-10 resolution


def pixel_array(image: Image.Image, size: int = PIXEL_SIZE) -> np.ndarray:
    """The whole image squeezed to size x size RGB (no crop: clip art and objects fill the frame
    differently, and cutting off a border would drop what tells them apart), uint8 HxWx3."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.asarray(rgb.resize((size, size), Image.BILINEAR, reducing_gap=2.0), dtype=np.uint8)


class _NumpyEncoder(Encoder):
    """Encoders whose work is all in `prepare` (one image, any thread); the batch step only normalises."""

    device = "cpu"

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        return normalise(np.asarray(batch, dtype=np.float32).reshape(len(batch), -1))


class ColorHistogramEncoder(_NumpyEncoder):
    """32 bins for each of R, G and B, each channel's histogram as a fraction of the pixels.

    Blind to shape and position; the image is reduced to at most 128 px first, which changes
    the fractions by well under a percent and makes large images cheap."""

    kind = COLOR_HISTOGRAM
    dim = 3 * HISTOGRAM_BINS
    input_size = 128

    def __init__(self) -> None:
        self.name = COLOR_HISTOGRAM

    def prepare(self, image: Image.Image) -> np.ndarray:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if max(rgb.size) > self.input_size:
            rgb = rgb.copy()
            rgb.thumbnail((self.input_size, self.input_size), Image.BILINEAR)
        pixels = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
        shift = 8 - int(np.log2(HISTOGRAM_BINS))
        counts = [np.bincount(pixels[:, c] >> shift, minlength=HISTOGRAM_BINS) for c in range(3)]
        return (np.concatenate(counts) / max(len(pixels), 1)).astype(np.float32)


class PixelsEncoder(_NumpyEncoder):
    """The image as 32 x 32 RGB values in [0, 1]: the simplest representation there is."""

    kind = PIXELS
    input_size = PIXEL_SIZE

    def __init__(self, size: int = PIXEL_SIZE) -> None:
        self.name = PIXELS
        self.size = size
        self.dim = size * size * 3

    def prepare(self, image: Image.Image) -> np.ndarray:
        return (pixel_array(image, self.size).astype(np.float32) / 255.0).ravel()


class PhashEncoder(_NumpyEncoder):
    """The 64-bit DCT perceptual hash (pipeline.phash) as a vector of +1/-1, L2-normalised.

    For two hashes at Hamming distance h the cosine distance is exactly h/32, so the cosine
    index ranks by Hamming distance and `distance * 32` gives the number of differing bits."""

    kind = PHASH
    dim = HASH_BITS
    input_size = 64

    def __init__(self) -> None:
        self.name = PHASH

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.where(phash_bits(image), 1.0, -1.0).astype(np.float32)
