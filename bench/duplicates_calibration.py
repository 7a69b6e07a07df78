"""Where the near-duplicate thresholds come from: edit the sample images and measure.

For each bundled sample image (openclipart, public domain) this makes known copies (JPEG
re-encode at quality 30, half size, 5% and 10% crops, +20% brightness, grayscale, mirror) and
measures the perceptual-hash Hamming distance and the EfficientNet-Lite0 cosine distance between
each copy and its original, and between different originals. Writes
bench/results/duplicates-calibration.json and prints the table behind the defaults of
`clipsql duplicates` (--max-hamming 10, --max-distance 0.08).

    python bench/duplicates_calibration.py [--images 120]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.encoders import load_encoder  # noqa: E402
from pipeline.images import decode_image  # noqa: E402
from pipeline.phash import phash64  # noqa: E402
from pipeline.resources import sample_dir  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return decode_image(out.getvalue(), 224)


def _crop(image: Image.Image, fraction: float) -> Image.Image:
    w, h = image.size
    return image.crop((int(w * fraction), int(h * fraction), w - int(w * fraction), h - int(h * fraction)))


EDITS = {
    "jpeg q30": lambda im: _jpeg(im, 30),
    "half size": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2))),
    "crop 5%": lambda im: _crop(im, 0.05),
    "crop 10%": lambda im: _crop(im, 0.10),
    "brightness +20%": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "grayscale": lambda im: im.convert("L").convert("RGB"),
    "mirror": lambda im: im.transpose(Image.FLIP_LEFT_RIGHT),
}


def _bits(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120, help="sample images to use (embedding is the slow part)")
    parser.add_argument("--max-hamming", type=int, default=10)
    parser.add_argument("--max-distance", type=float, default=0.08)
    args = parser.parse_args()
    files = sorted((sample_dir() / "images").glob("*.jpg"))[: args.images]
    images = [decode_image(f.read_bytes(), 224) for f in files]
    encoder = load_encoder("efficientnet-lite0", "cpu")

    def embed(batch: list[Image.Image]) -> np.ndarray:
        return np.concatenate([encoder.embed(batch[i:i + 32]) for i in range(0, len(batch), 32)])

    hashes = [phash64(im) for im in images]
    vectors = embed(images)
    rows = []
    for name, edit in EDITS.items():
        edited = [edit(im) for im in images]
        bits = np.array([_bits(h, phash64(e)) for h, e in zip(hashes, edited, strict=True)])
        dist = 1.0 - np.sum(vectors * embed(edited), axis=1)
        rows.append({"pair": f"copy: {name}", "hamming_median": float(np.median(bits)),
                     "within_hamming": round(float((bits <= args.max_hamming).mean()), 4),
                     "cosine_median": round(float(np.median(dist)), 4),
                     "within_distance": round(float((dist <= args.max_distance).mean()), 4),
                     "either_tier": round(float(((bits <= args.max_hamming) | (dist <= args.max_distance)).mean()), 4)})
    upper = np.triu_indices(len(images), 1)
    bits = np.array([[_bits(a, b) for b in hashes] for a in hashes])[upper]
    dist = (1.0 - vectors @ vectors.T)[upper]
    rows.append({"pair": "different pictures", "hamming_median": float(np.median(bits)),
                 "within_hamming": round(float((bits <= args.max_hamming).mean()), 5),
                 "cosine_median": round(float(np.median(dist)), 4),
                 "within_distance": round(float((dist <= args.max_distance).mean()), 5),
                 "either_tier": round(float(((bits <= args.max_hamming) | (dist <= args.max_distance)).mean()), 5)})
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "duplicates-calibration.json"
    out.write_text(json.dumps({"images": len(images), "max_hamming": args.max_hamming,
                               "max_distance": args.max_distance, "model": "efficientnet-lite0", "rows": rows},
                              indent=2) + "\n")
    print(f"{'pair':26s} {'hamming med':>11s} {'<=bits':>7s} {'cos med':>8s} {'<=dist':>7s} {'either':>7s}")
    for row in rows:
        print(f"{row['pair']:26s} {row['hamming_median']:11.1f} {row['within_hamming']:7.2%} "
              f"{row['cosine_median']:8.4f} {row['within_distance']:7.2%} {row['either_tier']:7.2%}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
