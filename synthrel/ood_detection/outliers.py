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
from typing import Literal, get_args

import numpy as np
import torch
from torch.utils.data import Dataset

from synthrel.conventions import IGNORE_INDEX, OOD_LABEL_ID
from synthrel.data.synthetic import read_item_list  # noqa: F401  (re-exported: the job reads lists here)
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


#: RbA's MIN_SIZE_TRAIN (ckpts/swin_*_1dl_rba_ood_*/config.yaml): short side 512..2048, chosen uniformly.
RBA_MIN_SIZES = (512, 614, 716, 819, 921, 1024, 1126, 1228, 1331, 1433, 1536, 1638, 1740, 1843, 1945, 2048)
#: How a synthetic OOD item enters a training sample (stages.ood_detection.rba.finetune.synthetic_mode):
#: whole_image - the sample is replaced by the inpainted image, its trainId label with 254 on the object mask;
#: cut_paste   - the object (inpainted pixels under its mask) is pasted into the Cityscapes sample, as COCO.
SyntheticMode = Literal["whole_image", "cut_paste"]
SYNTHETIC_MODES = get_args(SyntheticMode)


def resize_shortest_edge(image: np.ndarray, label: np.ndarray, short: int, max_size: int):
    """detectron2's ResizeShortestEdge: short side -> `short`, long side capped at `max_size` (bilinear image,
    nearest label; sizes rounded as int(x + 0.5))."""
    import cv2

    h, w = label.shape
    scale = short / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max(newh, neww) > max_size:
        factor = max_size / max(newh, neww)
        newh, neww = newh * factor, neww * factor
    size = (int(neww + 0.5), int(newh + 0.5))
    if size == (w, h):
        return image, label
    return (cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
            cv2.resize(label, size, interpolation=cv2.INTER_NEAREST))


def color_aug_ssd(image: np.ndarray, rng: np.random.Generator, brightness_delta: float = 32,
                  contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue_delta: int = 18) -> np.ndarray:
    """Mask2Former's ColorAugSSDTransform on an RGB uint8 image: brightness, then contrast/saturation/hue in one
    of two orders, each applied with probability 1/2 (OpenCV HSV of the BGR image, hue in 0..179)."""
    import cv2

    def convert(x, alpha=1.0, beta=0.0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def bright(x):
        return convert(x, beta=rng.uniform(-brightness_delta, brightness_delta)) if rng.integers(2) else x

    def contr(x):
        return convert(x, alpha=rng.uniform(*contrast)) if rng.integers(2) else x

    def satur(x):
        if not rng.integers(2):
            return x
        hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=rng.uniform(*saturation))
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    def hue(x):
        if not rng.integers(2):
            return x
        hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + int(rng.integers(-hue_delta, hue_delta + 1))) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    x = np.ascontiguousarray(image[:, :, ::-1])
    x = bright(x)
    x = (hue(satur(contr(x)))) if rng.integers(2) else contr(hue(satur(x)))
    return np.ascontiguousarray(x[:, :, ::-1])


class OutlierMixDataset(Dataset):
    """`num_samples` training samples in RbA's recipe (`mask_former_semantic_coco_mix` mapper): inlier index
    i % len(inliers); with probability `mix_prob` an outlier enters it (COCO paste, or a synthetic item as
    `synthetic_mode`); then multi-scale resize (short side drawn from `min_sizes`, long side <= max_size), random
    crop `crop_size` (h, w), SSD colour augmentation and horizontal flip."""

    def __init__(self, inliers, outliers=None, coco: CocoObjects | None = None, mix_prob: float = 0.1,
                 seed: int = 0, num_samples: int | None = None, crop_size=None, flip: bool = True,
                 min_sizes=None, max_size: int = 4096, color_aug: bool = True, synthetic_mode: str = "whole_image"):
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob}")
        if outliers is not None and coco is not None:
            raise ValueError("choose one outlier source: the synthetic OOD objects or COCO paste")
        if synthetic_mode not in SYNTHETIC_MODES:
            from synthrel.errors import unknown_name

            raise unknown_name("synthetic_mode", synthetic_mode, SYNTHETIC_MODES,
                               "stages.ood_detection.rba.finetune.synthetic_mode")
        self.inliers, self.outliers, self.coco = inliers, outliers, coco
        self.mix_prob, self.seed, self.flip = mix_prob, seed, flip
        self.num_samples = num_samples or len(inliers)
        self.crop_size = tuple(crop_size) if crop_size else None
        self.min_sizes, self.max_size = (tuple(min_sizes) if min_sizes else None), max_size
        self.color_aug, self.synthetic_mode = color_aug, synthetic_mode

    def __len__(self) -> int:
        return self.num_samples

    def _synthetic_object(self, rng) -> tuple[np.ndarray, np.ndarray]:
        sample = self.outliers[int(rng.integers(len(self.outliers)))]
        return sample["image"], sample["ood"] == 1

    def __getitem__(self, index: int) -> dict:
        rng = item_rng(self.seed, index, "outlier_mix")
        mix = rng.random() < self.mix_prob
        if mix and self.outliers is not None and self.synthetic_mode == "whole_image":
            sample = self.outliers[int(rng.integers(len(self.outliers)))]
            image, label = sample["image"], sample["label"].copy()
            label[sample["ood"] == 1] = OOD_LABEL_ID
        else:
            sample = self.inliers[index % len(self.inliers)]
            image, label = sample["image"], sample["label"]
            if mix:
                obj_image, obj_mask = (self.coco[int(rng.integers(len(self.coco)))] if self.coco is not None
                                       else self._synthetic_object(rng) if self.outliers is not None else (None, None))
                if obj_image is not None:
                    image, label = paste_object(image, label, obj_image, obj_mask, rng)
        return self.augment(image, label, rng) | {"mixed": bool(mix)}

    def augment(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> dict:
        if self.min_sizes:
            short = int(self.min_sizes[int(rng.integers(len(self.min_sizes)))])
            image, label = resize_shortest_edge(image, label, short, self.max_size)
        if self.crop_size:
            ch, cw = min(self.crop_size[0], label.shape[0]), min(self.crop_size[1], label.shape[1])
            top = int(rng.integers(0, label.shape[0] - ch + 1))
            left = int(rng.integers(0, label.shape[1] - cw + 1))
            image, label = image[top : top + ch, left : left + cw], label[top : top + ch, left : left + cw]
        if self.color_aug:
            image = color_aug_ssd(np.ascontiguousarray(image), rng)
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        image, label = np.ascontiguousarray(image), np.ascontiguousarray(label)
        return {"image": image, "label": label, "outlier_mask": outlier_mask_of(label)}


def collate_outliers(samples: list[dict]) -> dict:
    """Stack same-size samples into an RbAFineTuner batch as uint8 (images (B, H, W, 3), label, outlier_mask):
    `rba.model_batch` normalises it where the step runs (the GPU after Lightning's transfer), not in the loader
    workers, which are the fine-tune's bottleneck (benchmarks/rba_loader.py), and with a quarter of the bytes."""
    sizes = {s["label"].shape for s in samples}
    if len(sizes) > 1:
        raise ValueError(f"samples of different sizes {sorted(sizes)}: set a crop_size")
    return {key: torch.from_numpy(np.stack([s[field] for s in samples]))
            for key, field in (("images", "image"), ("label", "label"), ("outlier_mask", "outlier_mask"))}


class ItemSubset(Dataset):
    """The items of `dataset` (its `.items[i].id`) listed in `ids`; an id that is not an accepted item of the set
    is an error naming the list file."""

    def __init__(self, dataset, ids: list[str], source: str = "item list"):
        index = {item.id: i for i, item in enumerate(dataset.items)}
        unknown = [i for i in ids if i not in index]
        if unknown:
            raise DatasetError(f"{source}: {len(unknown)} id(s) are not accepted items of {dataset.root}: "
                               f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
        self.dataset, self.indices = dataset, [index[i] for i in dict.fromkeys(ids)]
        self.items = [dataset.items[i] for i in self.indices]
        self.root = dataset.root

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.dataset[self.indices[index]]
