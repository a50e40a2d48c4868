"""Training samples for RbA's outlier exposure: Cityscapes train mixed with outliers (label 254).

Two outlier sources:
- the synthetic OOD-object set (GenVal's variant, spec S11 [INF]): with probability `mix_prob` a sample is
  replaced by an inpainted image whose trainId label gets 254 on the object mask;
- COCO paste (RbA's original, optional): with probability `mix_prob` one COCO object is pasted at a random
  position of the Cityscapes sample, its pixels labelled 254.
Every draw comes from `item_rng(seed, index)`, so a sample depends on its index only (not on workers/order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from synthrel.conventions import IGNORE_INDEX, OOD_LABEL_ID
from synthrel.errors import DatasetError
from synthrel.jobs import item_rng

COCO_LAYOUT = """  images/<name>.jpg   (COCO images holding an object of a non-Cityscapes class)
  masks/<name>.png    (binary mask of that object, 255 or 1 on the object)"""


def outlier_mask_of(label: np.ndarray) -> np.ndarray:
    """RbA's outlier_mask: 1 on label 254, 255 on ignore, 0 elsewhere."""
    return np.where(label == OOD_LABEL_ID, 1, np.where(label == IGNORE_INDEX, IGNORE_INDEX, 0)).astype(np.uint8)


def paste_object(image, label, obj_image, obj_mask, rng: np.random.Generator, max_fraction: float = 0.5):
    """Paste the masked object (cropped to its box, shrunk to at most `max_fraction` of the target side) at a
    random position; its pixels get label 254. Returns new (image, label)."""
    ys, xs = np.nonzero(obj_mask)
    if ys.size == 0:
        return image, label
    obj_image = obj_image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    obj_mask = obj_mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] > 0
    h, w = label.shape
    scale = min(1.0, max_fraction * h / obj_mask.shape[0], max_fraction * w / obj_mask.shape[1])
    if scale < 1.0:
        import cv2

        size = (max(1, int(obj_mask.shape[1] * scale)), max(1, int(obj_mask.shape[0] * scale)))
        obj_image = cv2.resize(obj_image, size, interpolation=cv2.INTER_LINEAR)
        obj_mask = cv2.resize(obj_mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    oh, ow = obj_mask.shape
    top, left = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
    image, label = image.copy(), label.copy()
    region = (slice(top, top + oh), slice(left, left + ow))
    image[region][obj_mask] = obj_image[obj_mask]
    label[region][obj_mask] = OOD_LABEL_ID
    return image, label


class CocoObjects:
    """A prepared COCO outlier proxy set (RbA's COCO_PROXY): image/mask pairs paired by name."""

    def __init__(self, root: str | Path | None):
        if root is None or not Path(root).is_dir():
            raise DatasetError(f"COCO outlier root {root!r} does not exist (config key "
                               f"stages.ood_detection.rba.finetune.coco_root); expected\n{COCO_LAYOUT}")
        root = Path(root)
        masks = {p.stem: p for p in (root / "masks").glob("*.png")}
        self.pairs = [(p, masks[p.stem]) for p in sorted((root / "images").glob("*.jpg")) if p.stem in masks]
        if not self.pairs:
            raise DatasetError(f"no image/mask pairs under {root}; expected\n{COCO_LAYOUT}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from synthrel.data.io import read_image, read_label

        image_path, mask_path = self.pairs[index]
        return read_image(image_path), read_label(mask_path) > 0


class OutlierMixDataset(Dataset):
    """`num_samples` training samples: inlier index i % len(inliers), replaced by / pasted with an outlier with
    probability `mix_prob`; optional random crop (crop_size (h, w)) and horizontal flip."""

    def __init__(self, inliers, outliers=None, coco: CocoObjects | None = None, mix_prob: float = 0.1,
                 seed: int = 0, num_samples: int | None = None, crop_size=None, flip: bool = True):
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob}")
        if outliers is not None and coco is not None:
            raise ValueError("choose one outlier source: the synthetic OOD objects or COCO paste")
        self.inliers, self.outliers, self.coco = inliers, outliers, coco
        self.mix_prob, self.seed, self.flip = mix_prob, seed, flip
        self.num_samples = num_samples or len(inliers)
        self.crop_size = tuple(crop_size) if crop_size else None

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        rng = item_rng(self.seed, index, "outlier_mix")
        mix = rng.random() < self.mix_prob
        if mix and self.outliers is not None:
            sample = self.outliers[int(rng.integers(len(self.outliers)))]
            image, label = sample["image"], sample["label"].copy()
            label[sample["ood"] == 1] = OOD_LABEL_ID
        else:
            sample = self.inliers[index % len(self.inliers)]
            image, label = sample["image"], sample["label"]
            if mix and self.coco is not None:
                obj_image, obj_mask = self.coco[int(rng.integers(len(self.coco)))]
                image, label = paste_object(image, label, obj_image, obj_mask, rng)
        if self.crop_size:
            ch, cw = min(self.crop_size[0], label.shape[0]), min(self.crop_size[1], label.shape[1])
            top = int(rng.integers(0, label.shape[0] - ch + 1))
            left = int(rng.integers(0, label.shape[1] - cw + 1))
            image, label = image[top : top + ch, left : left + cw], label[top : top + ch, left : left + cw]
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        image, label = np.ascontiguousarray(image), np.ascontiguousarray(label)
        return {"image": image, "label": label, "outlier_mask": outlier_mask_of(label), "mixed": bool(mix)}


def collate_outliers(samples: list[dict]) -> dict:
    """Stack same-size samples into the RbAFineTuner batch (normalised pixel values on the CPU)."""
    from synthrel.ood_detection.rba import to_pixel_values

    sizes = {s["label"].shape for s in samples}
    if len(sizes) > 1:
        raise ValueError(f"samples of different sizes {sorted(sizes)}: set a crop_size")
    return {
        "pixel_values": to_pixel_values(np.stack([s["image"] for s in samples])),
        "label": torch.as_tensor(np.stack([s["label"] for s in samples])).long(),
        "outlier_mask": torch.as_tensor(np.stack([s["outlier_mask"] for s in samples])).long(),
    }
