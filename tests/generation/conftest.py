"""Tiny SD pipelines, ControlNets built from their UNets, and a small Cityscapes layout with captions."""

import json

import numpy as np
import pytest

from synthrel.data.io import write_png

CITIES = {"aachen": 2, "bonn": 1}
SOURCE_SIZE = (96, 160)  # H, W: a wide frame, so the square crop has a free column offset


def write_cityscapes(root, cities=CITIES, size=SOURCE_SIZE, split="val", seed=0):
    """A small Cityscapes layout: blocky random labelIds maps (0..33) and RGB images of the same size."""
    rng = np.random.default_rng(seed)
    ids = []
    for city, n in cities.items():
        for k in range(n):
            id_ = f"{city}_{k:06d}_000019"
            blocks = rng.integers(0, 34, size=(size[0] // 8, size[1] // 8), dtype=np.uint8)
            label = np.kron(blocks, np.ones((8, 8), dtype=np.uint8))
            image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            write_png(root / "leftImg8bit" / split / city / f"{id_}_leftImg8bit.png", image)
            write_png(root / "gtFine" / split / city / f"{id_}_gtFine_labelIds.png", label)
            ids.append(id_)
    return ids


@pytest.fixture
def cityscapes_writer():
    """`write_cityscapes` for tests that write their own layout (test modules cannot import a conftest)."""
    return write_cityscapes


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from diffusers import ControlNetModel, StableDiffusionPipeline, StableDiffusionXLPipeline

    from synthrel.tiny.diffusion import build_tiny_sd

    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind, cls in (("sd15", StableDiffusionPipeline), ("sdxl", StableDiffusionXLPipeline)):
        folder = build_tiny_sd(root / kind, kind)
        unet = cls.from_pretrained(folder).unet
        ControlNetModel.from_unet(unet, conditioning_channels=1).save_pretrained(root / f"controlnet_{kind}")
        out[kind] = folder
        out[f"controlnet_{kind}"] = root / f"controlnet_{kind}"
    return out


@pytest.fixture(scope="session")
def source_data(tmp_path_factory):
    """(dataset config, captions path, ids) of a 3-image Cityscapes val layout."""
    root = tmp_path_factory.mktemp("cityscapes")
    ids = write_cityscapes(root)
    captions = root / "captions.jsonl"
    captions.write_text("".join(json.dumps({"id": i, "caption": f"a street with cars {n}"}) + "\n"
                                for n, i in enumerate(ids)))
    config = {"_target_": "synthrel.data.cityscapes.CityscapesDataset", "root": str(root), "split": "val"}
    return config, captions, ids
