"""Tiny models (built once per session) and a tiny Cityscapes val set of 128x64 images."""

import numpy as np
import pytest

from synthrel.data.io import write_png


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from synthrel.tiny.diffusion import build_tiny_sd
    from synthrel.tiny.grounded_sam import build_tiny_grounded_sam

    root = tmp_path_factory.mktemp("models")
    paths = build_tiny_grounded_sam(root)
    paths["sd15_inpaint"] = build_tiny_sd(root / "sd15_inpaint", "sd15_inpaint")
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="session")
def cityscapes_root(tmp_path_factory):
    """Three 128x64 val images with random labelIds, in the Cityscapes layout."""
    root = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.default_rng(0)
    for i in range(3):
        stem = f"city_000000_{i:06d}"
        write_png(root / f"leftImg8bit/val/city/{stem}_leftImg8bit.png",
                  rng.integers(0, 256, (64, 128, 3), dtype=np.uint8))
        write_png(root / f"gtFine/val/city/{stem}_gtFine_labelIds.png",
                  rng.integers(0, 34, (64, 128), dtype=np.uint8))
    return root
