"""Tiny SD1.5/SDXL pipelines (built once per session) and a tiny Cityscapes train split written per test."""

import json

import numpy as np
import pytest
from PIL import Image

from synthrel.tiny.diffusion import build_tiny_sd

CITY = "aachen"
CAPTIONS = ["a street with cars", "a road in the city", "people on the sidewalk", "a bus on the road"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {kind: build_tiny_sd(root / kind, kind, seed=0) for kind in ("sd15", "sdxl")}


def write_tiny_cityscapes(root, n=4, size=(32, 64), seed=0):
    """n frames of H x W = size in the Cityscapes layout (train split) and a captions JSONL; returns its path."""
    rng = np.random.default_rng(seed)
    height, width = size
    captions = root / "captions" / "cityscapes_train.jsonl"
    captions.parent.mkdir(parents=True)
    lines = []
    for i in range(n):
        name = f"{CITY}_000000_{i:06d}"
        image_dir = root / "cityscapes" / "leftImg8bit" / "train" / CITY
        label_dir = root / "cityscapes" / "gtFine" / "train" / CITY
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        # Left half road (7), right half building (11), a random stripe of cars (26): a learnable layout.
        label = np.full((height, width), 7, dtype=np.uint8)
        label[:, width // 2:] = 11
        top = int(rng.integers(0, height - 8))
        label[top:top + 8] = 26
        image = (rng.random((height, width, 3)) * 60).astype(np.uint8) + (label[..., None] * 6).astype(np.uint8)
        Image.fromarray(image).save(image_dir / f"{name}_leftImg8bit.png")
        Image.fromarray(label).save(label_dir / f"{name}_gtFine_labelIds.png")
        lines.append(json.dumps({"id": name, "caption": CAPTIONS[i % len(CAPTIONS)]}))
    captions.write_text("\n".join(lines) + "\n")
    return captions


@pytest.fixture
def write_cityscapes():
    return write_tiny_cityscapes


@pytest.fixture
def tiny_cityscapes(tmp_path):
    captions = write_tiny_cityscapes(tmp_path)
    return {"root": tmp_path / "cityscapes", "captions": captions}
