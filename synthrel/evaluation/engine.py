"""One forward pass per (model, dataset) feeding every metric, accumulated on the device.

Per batch of equal-size images the logits give, without a host sync: the confusion matrix (mIoU), ECE bins
over all valid pixels, the paper's calibration protocol (a seeded random draw of pixels per image, ignore
dropped after the draw) whose logits are kept for temperature fitting, per-image backbone features, and, for
datasets with an OOD mask, histograms of three per-pixel OOD scores split by ID/OOD pixels (void excluded).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from synthrel.conventions import IGNORE_INDEX, NUM_CLASSES
from synthrel.data.base import collate_samples
from synthrel.jobs import item_rng
from synthrel.metrics.calibration import N_BINS, accumulate_bins
from synthrel.metrics.segmentation import new_confusion, update_confusion

log = logging.getLogger(__name__)

#: OOD scores per pixel, their fixed histogram ranges, and whether a high value means in-distribution.
#: Max logit is clamped into its range; bins are equal-width and ascending in the raw score.
OOD_SCORES = ("msp", "max_logit", "entropy")
OOD_RANGES = {"msp": (0.0, 1.0), "max_logit": (-50.0, 50.0), "entropy": (0.0, math.log(NUM_CLASSES))}
OOD_HIGH_IS_ID = {"msp": True, "max_logit": True, "entropy": False}
OOD_BINS = 10000  # pooled histograms
OOD_IMAGE_BINS = 100  # per-image histograms


@dataclass
class EvalOutputs:
    n_images: int
    image_ids: list[str]
    confusion: np.ndarray | None  # (19, 19) int64, rows = ground truth
    per_image_confusion: np.ndarray | None  # (n_images, 19, 19) int64, for the data-size ablation
    ece_bins: np.ndarray | None  # (3, 15) count / conf sum / correct sum, all valid pixels
    ece_paper_bins: np.ndarray | None  # same over the sampled pixels
    calib: dict | None  # logits (N, 19) f32, labels (N,) u8, image_index (N,) i32
    features: np.ndarray  # (n_images, C)
    ood: dict | None  # pooled (3, 2, OOD_BINS) and per_image (n, 3, 2, OOD_IMAGE_BINS); [:, 0] ID, [:, 1] OOD


class OnePassAccumulator:
    """Device-side accumulators fed batch by batch; `result()` is the only host transfer."""

    def __init__(self, device, calib_pixels_per_image: int, seed: int):
        self.device = torch.device(device)
        self.calib_pixels = calib_pixels_per_image
        self.seed = seed
        self.confusion = new_confusion(self.device)
        self.image_confusions: list[torch.Tensor] = []
        self.ece_bins = torch.zeros(3, N_BINS, dtype=torch.float64, device=self.device)
        self.ece_paper_bins = torch.zeros_like(self.ece_bins)
        self.calib = defaultdict(list)
        self.features: list[torch.Tensor] = []
        self.ood_pooled = torch.zeros(len(OOD_SCORES), 2 * OOD_BINS, dtype=torch.int64, device=self.device)
        self.ood_images: list[torch.Tensor] = []
        self.ids: list[str] = []
        self.indices: list[int] = []
        self.has_labels = False

    def update(self, logits, labels, oods, features, indices: list[int], ids: list[str]) -> None:
        """Add a batch: logits (B, 19, H, W); labels / oods (B, H, W) uint8 on the device or None;
        `indices` are the images' positions in the dataset (they seed the pixel draw)."""
        self.ids.extend(ids)
        self.indices.extend(indices)
        self.features.append(features.float())
        logits = logits.float()
        lse = torch.logsumexp(logits, dim=1)
        max_logit, pred = logits.max(dim=1)
        conf = torch.exp(max_logit - lse)
        if labels is not None:
            self.has_labels = True
            labels = labels.long()
            per_image = torch.stack([update_confusion(new_confusion(self.device), p, y)
                                     for p, y in zip(pred, labels, strict=True)])
            self.image_confusions.append(per_image)
            self.confusion += per_image.sum(0)
            valid = labels < NUM_CLASSES
            self.ece_bins += accumulate_bins(conf[valid], pred[valid] == labels[valid])
            if self.calib_pixels:
                self._sample_calibration(logits, labels, indices)
        if oods is not None:
            entropy = lse - (torch.softmax(logits, dim=1) * logits).sum(dim=1)
            self._ood_histograms({"msp": conf, "max_logit": max_logit, "entropy": entropy}, oods.long())

    def _sample_calibration(self, logits, labels, indices: list[int]) -> None:
        _, _, height, width = logits.shape
        n_pixels = height * width
        flat_logits = logits.flatten(2)
        flat_labels = labels.flatten(1)
        for b, index in enumerate(indices):
            if 0 < self.calib_pixels < n_pixels:  # relis: np.random.choice(H*W, 20000, replace=False)
                picks = item_rng(self.seed, index, "calib").choice(n_pixels, self.calib_pixels, replace=False)
                picks = torch.from_numpy(picks).to(self.device, non_blocking=True)
            else:
                picks = torch.arange(n_pixels, device=self.device)
            lab = flat_labels[b, picks]
            keep = lab != IGNORE_INDEX  # ignore dropped after the draw (relis)
            z = flat_logits[b][:, picks].T[keep]
            y = lab[keep]
            probs = torch.softmax(z, dim=1)
            conf, pred = probs.max(dim=1)
            self.ece_paper_bins += accumulate_bins(conf, pred == y)
            self.calib["logits"].append(z)
            self.calib["labels"].append(y.to(torch.uint8))
            self.calib["image_index"].append(torch.full_like(y, index, dtype=torch.int32))

    def _ood_histograms(self, scores: dict, oods: torch.Tensor) -> None:
        batch = oods.shape[0]
        valid = oods <= 1  # 0 ID, 1 OOD; 255 void excluded
        image = torch.arange(batch, device=self.device).view(batch, 1, 1).expand_as(oods)
        per_image = torch.zeros(batch, len(OOD_SCORES), 2 * OOD_IMAGE_BINS, dtype=torch.int64, device=self.device)
        for s, name in enumerate(OOD_SCORES):
            lo, hi = OOD_RANGES[name]
            unit = ((scores[name].float() - lo) / (hi - lo)).clamp(0, 1)
            for n_bins, out in ((OOD_BINS, None), (OOD_IMAGE_BINS, per_image)):
                idx = (unit * n_bins).long().clamp_(max=n_bins - 1) + oods * n_bins
                if out is None:
                    self.ood_pooled[s] += torch.bincount(idx[valid], minlength=2 * n_bins)
                else:
                    flat = image[valid] * 2 * n_bins + idx[valid]
                    out[:, s] += torch.bincount(flat, minlength=batch * 2 * n_bins).view(batch, 2 * n_bins)
        self.ood_images.append(per_image)

    def result(self) -> EvalOutputs:
        """Host copies, per-image rows in dataset order (so `calib["image_index"]` indexes them)."""
        n = len(self.ids)
        order = np.argsort(self.indices, kind="stable")
        if not np.array_equal(np.asarray(self.indices)[order], np.arange(n)):
            raise AssertionError("every dataset image must be evaluated exactly once")
        calib = None
        if self.has_labels and self.calib:
            calib = {k: torch.cat(v).cpu().numpy() for k, v in self.calib.items()}
        elif self.has_labels:
            calib = {"logits": np.zeros((0, NUM_CLASSES), np.float32), "labels": np.zeros(0, np.uint8),
                     "image_index": np.zeros(0, np.int32)}
        ood = None
        if self.ood_images:
            ood = {"pooled": self.ood_pooled.view(len(OOD_SCORES), 2, OOD_BINS).cpu().numpy(),
                   "per_image": torch.cat(self.ood_images).view(n, len(OOD_SCORES), 2, OOD_IMAGE_BINS)
                   .cpu().numpy().astype(np.int32)[order]}
        return EvalOutputs(
            n_images=n,
            image_ids=[self.ids[i] for i in order],
            confusion=self.confusion.cpu().numpy() if self.has_labels else None,
            per_image_confusion=torch.cat(self.image_confusions).cpu().numpy()[order] if self.has_labels else None,
            ece_bins=self.ece_bins.cpu().numpy() if self.has_labels else None,
            ece_paper_bins=self.ece_paper_bins.cpu().numpy() if self.has_labels else None,
            calib=calib,
            features=torch.cat(self.features).cpu().numpy()[order] if self.features else np.zeros((0, 0), np.float32),
            ood=ood,
        )


def evaluate_dataset(segmenter, dataset, *, batch_size: int = 1, num_workers: int = 0,
                     calib_pixels_per_image: int = 20000, seed: int = 0, desc: str = "") -> EvalOutputs:
    """Run `segmenter` once over `dataset`; images of one loader batch are grouped by size."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        collate_fn=collate_samples, pin_memory=segmenter.device.type == "cuda")
    acc = OnePassAccumulator(segmenter.device, calib_pixels_per_image, seed)
    index = 0
    with tqdm(total=len(dataset), desc=desc or "evaluate", unit="img") as bar:
        for batch in loader:
            by_size = defaultdict(list)
            for pos, sample in enumerate(batch):
                by_size[sample["image"].shape].append(pos)
            for positions in by_size.values():
                group = [batch[p] for p in positions]
                images = np.stack([s["image"] for s in group])
                logits, features = segmenter.logits_and_features(images, with_features=True)
                acc.update(logits, _stack(group, "label", segmenter.device), _stack(group, "ood", segmenter.device),
                           features, [index + p for p in positions], [s["id"] for s in group])
            index += len(batch)
            bar.update(len(batch))
    return acc.result()


def _stack(group: list[dict], field: str, device) -> torch.Tensor | None:
    if group[0][field] is None:
        return None
    return torch.from_numpy(np.stack([s[field] for s in group])).to(device, non_blocking=True)
