"""Tiny Cityscapes-layout datasets and a tiny zoo model written by the tests."""

from pathlib import Path

import numpy as np
import pytest

from synthrel.conventions import TRAIN_TO_LABEL
from synthrel.data.io import write_png
from synthrel.tiny.segmentation import ensure_tiny_segmenter


def write_cityscapes(root: Path, sizes=((64, 128), (64, 128), (48, 96)), seed=0) -> Path:
    """Images with random content and labelIds maps holding every train class plus void (ignore) areas."""
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        name = f"city_{i:06d}_000019"
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        train = rng.integers(0, 19, (h, w)).astype(np.uint8)
        label_ids = TRAIN_TO_LABEL[train]
        label_ids[: h // 8] = 0  # unlabeled -> ignore
        write_png(root / "leftImg8bit" / "val" / "city" / f"{name}_leftImg8bit.png", image)
        write_png(root / "gtFine" / "val" / "city" / f"{name}_gtFine_labelIds.png", label_ids)
    return root


@pytest.fixture
def cityscapes_dir(tmp_path) -> Path:
    return write_cityscapes(tmp_path / "cs")


@pytest.fixture(scope="session")
def tiny_pspnet(tmp_path_factory):
    """A tiny PSPNet-R18 saved as config.py + checkpoint.pth, and its zoo entry dict."""
    folder = ensure_tiny_segmenter("pspnet_r18", tmp_path_factory.mktemp("zoo") / "pspnet_r18")
    return folder, {"family": "PSPNet", "framework": "mmseg", "config": str(folder / "config.py"),
                    "checkpoint": str(folder / "checkpoint.pth")}
