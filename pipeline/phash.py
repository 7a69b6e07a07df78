"""A 64-bit perceptual hash (DCT hash) for near-duplicate detection.

The image is reduced to 32x32 grayscale, transformed with a 2-D DCT, and the 8x8 lowest
frequencies (without the DC term's influence on the threshold) are compared with their
median: one bit each. Re-encoding, resizing and mild colour changes flip few bits; different
images differ in about half of them. Hamming distance between two hashes is
`bitCount(bitXor(a, b))` in ClickHouse.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

HASH_BITS = 64
_SIZE = 32
_LOW = 8


@lru_cache(maxsize=1)
def _dct_matrix(n: int = _SIZE) -> np.ndarray:
    """The orthonormal DCT-II matrix: `D @ x` transforms a column, `D @ X @ D.T` an image."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def phash_bits(image: Image.Image) -> np.ndarray:
    """The 64 hash bits (row-major over the 8x8 low frequencies) as a bool array."""
    gray = image.convert("L").resize((_SIZE, _SIZE), Image.LANCZOS)
    pixels = np.asarray(gray, dtype=np.float64)
    dct = _dct_matrix()
    coefficients = (dct @ pixels @ dct.T)[:_LOW, :_LOW].ravel()
    median = np.median(coefficients[1:])  # the DC term is the mean brightness, not structure
    return coefficients > median


def phash64(image: Image.Image) -> int:
    """The hash as an unsigned 64-bit integer (bit 63 is the first coefficient)."""
    value = 0
    for bit in phash_bits(image):
        value = (value << 1) | int(bit)
    return value


def hamming(a: int, b: int) -> int:
    return int(a ^ b).bit_count()
