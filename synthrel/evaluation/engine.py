"""One forward pass per (model, dataset) feeding every metric, accumulated on the device.

Per batch of equal-size images the logits give, without a host sync: the confusion matrix (mIoU), ECE bins
over all valid pixels, the paper's calibration protocol (a seeded random draw of pixels per image, ignore
dropped after the draw) whose logits are kept for temperature fitting, per-image backbone features, and, for
datasets with an OOD mask, histograms of three per-pixel OOD scores split by ID/OOD pixels (void excluded).

Nothing in the loop waits for the device: DataLoader workers stack each size group into (pinned) tensors and
draw the calibration pixels on the host; counts are fixed-range histograms (`torch.histc`) and weighted sums
`index_add_` into spread-out slots, so no boolean-mask selection or `bincount` (both read sizes back from the
device) runs per batch. Ignore pixels of the calibration draw are dropped once, in `result()`.
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
from synthrel.jobs import item_rng
from synthrel.metrics.calibration import N_BINS, confidence_bin_index
from synthrel.metrics.segmentation import new_confusion

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

    def update(self, logits, labels, oods, features, indices: list[int], ids: list[str], picks=None) -> None:
        """Add a batch: logits (B, 19, H, W); labels / oods (B, H, W) uint8 on the device or None;
        `indices` are the images' positions in the dataset (they seed the pixel draw); `picks` (B, k), when
        given, are those draws already made on the host (`calibration_picks`), e.g. by the loader workers."""
        self.ids.extend(ids)
        self.indices.extend(indices)
        if features is not None:
            self.features.append(features.float())
        logits = logits.float()
        lse = torch.logsumexp(logits, dim=1)
        max_logit, pred = logits.max(dim=1)
        conf = torch.exp(max_logit - lse)
        if labels is not None:
            self.has_labels = True
            labels = labels.long()
            per_image = _confusions(pred, labels)
            self.image_confusions.append(per_image)
            self.confusion += per_image.sum(0)
            self.ece_bins += _weighted_bins(conf, pred == labels, labels < NUM_CLASSES)
            if self.calib_pixels:
                if picks is None:
                    picks = torch.from_numpy(calibration_picks(self.seed, indices, *logits.shape[2:],
                                                               self.calib_pixels))
                self._sample_calibration(logits, labels, indices, picks.to(self.device, non_blocking=True))
        if oods is not None:
            entropy = lse - (torch.softmax(logits, dim=1) * logits).sum(dim=1)
            self._ood_histograms({"msp": conf, "max_logit": max_logit, "entropy": entropy}, oods.long())

    def _sample_calibration(self, logits, labels, indices: list[int], picks: torch.Tensor) -> None:
        """Keep the logits and labels of the drawn pixels; ignore pixels are dropped in `result()` (relis drops
        them after the draw), and meanwhile get zero weight in the paper-protocol ECE bins."""
        batch, n_classes = logits.shape[:2]
        k = picks.shape[1]
        lab = labels.flatten(1).gather(1, picks)  # (B, k)
        z = logits.flatten(2).gather(2, picks.unsqueeze(1).expand(batch, n_classes, k)).transpose(1, 2)  # (B, k, C)
        keep = lab != IGNORE_INDEX
        conf, pred = torch.softmax(z, dim=2).max(dim=2)
        self.ece_paper_bins += _weighted_bins(conf, pred == lab, keep)
        self.calib["logits"].append(z.reshape(batch * k, n_classes))
        self.calib["labels"].append(lab.reshape(-1).to(torch.uint8))
        self.calib["keep"].append(keep.reshape(-1))
        self.calib["image_index"].append(np.repeat(np.asarray(indices, dtype=np.int32), k))

    def _ood_histograms(self, scores: dict, oods: torch.Tensor) -> None:
        """Pooled and per-image histograms, score s's bins at offset s; void pixels fall outside the range."""
        batch = oods.shape[0]
        void = oods > 1  # 0 ID, 1 OOD; 255 void excluded
        image = torch.arange(batch, device=self.device).view(batch, 1, 1)
        pooled, per_image = [], []
        for s, name in enumerate(OOD_SCORES):
            lo, hi = OOD_RANGES[name]
            unit = ((scores[name].float() - lo) / (hi - lo)).clamp(0, 1)
            for n_bins, out in ((OOD_BINS, pooled), (OOD_IMAGE_BINS, per_image)):
                idx = (unit * n_bins).long().clamp_(max=n_bins - 1) + oods * n_bins
                if out is pooled:
                    out.append(idx + s * 2 * n_bins)
                else:
                    out.append(image * (len(OOD_SCORES) * 2 * n_bins) + s * 2 * n_bins + idx)
        n_scores = len(OOD_SCORES)
        self.ood_pooled += _histogram(torch.stack(pooled), ~void.unsqueeze(0), n_scores * 2 * OOD_BINS).view(
            n_scores, 2 * OOD_BINS)
        self.ood_images.append(_histogram(torch.stack(per_image), ~void.unsqueeze(0),
                                          batch * n_scores * 2 * OOD_IMAGE_BINS)
                               .view(batch, n_scores, 2 * OOD_IMAGE_BINS))

    def result(self) -> EvalOutputs:
        """Host copies, per-image rows in dataset order (so `calib["image_index"]` indexes them)."""
        n = len(self.ids)
        order = np.argsort(self.indices, kind="stable")
        if not np.array_equal(np.asarray(self.indices)[order], np.arange(n)):
            raise AssertionError("every dataset image must be evaluated exactly once")
        calib = None
        if self.has_labels and self.calib:
            keep = torch.cat(self.calib["keep"]).cpu().numpy()
            calib = {"logits": torch.cat(self.calib["logits"]).cpu().numpy()[keep],
                     "labels": torch.cat(self.calib["labels"]).cpu().numpy()[keep],
                     "image_index": np.concatenate(self.calib["image_index"])[keep]}
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


def calibration_picks(seed: int, indices, height: int, width: int, k: int) -> np.ndarray:
    """(B, k') pixel indices of the paper's calibration draw for dataset images `indices` of size (H, W):
    relis' np.random.choice(H*W, k, replace=False), seeded per image; every pixel when k is -1 or >= H*W."""
    n_pixels = height * width
    if 0 < k < n_pixels:
        return np.stack([item_rng(seed, index, "calib").choice(n_pixels, k, replace=False) for index in indices])
    return np.broadcast_to(np.arange(n_pixels), (len(indices), n_pixels)).copy()


class _Indexed(torch.utils.data.Dataset):
    """The dataset's samples with their positions, so that loader workers can seed per-image draws."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return index, self.dataset[index]


@dataclass
class _Collate:
    """Group a loader batch by image size into stacked tensors (pinned by the loader on CUDA), drawing the
    calibration pixels in the worker."""

    seed: int
    calib_pixels: int

    def __call__(self, batch: list[tuple[int, dict]]) -> list[dict]:
        by_size = defaultdict(list)
        for index, sample in batch:
            by_size[sample["image"].shape].append((index, sample))
        groups = []
        for members in by_size.values():
            indices = [i for i, _ in members]
            samples = [s for _, s in members]
            group = {"indices": indices, "ids": [s["id"] for s in samples],
                     "image": torch.from_numpy(np.stack([s["image"] for s in samples]))}
            for field in ("label", "ood"):
                group[field] = (None if samples[0][field] is None
                                else torch.from_numpy(np.stack([s[field] for s in samples])))
            group["picks"] = None
            if group["label"] is not None and self.calib_pixels:
                height, width = samples[0]["image"].shape[:2]
                group["picks"] = torch.from_numpy(calibration_picks(self.seed, indices, height, width,
                                                                    self.calib_pixels))
            groups.append(group)
        return groups


def evaluate_dataset(segmenter, dataset, *, batch_size: int = 1, num_workers: int = 0,
                     calib_pixels_per_image: int = 20000, seed: int = 0, desc: str = "",
                     with_features: bool = True) -> EvalOutputs:
    """Run `segmenter` once over `dataset`; images of one loader batch are grouped by size.

    `with_features=False` skips the per-image backbone features (in slide mode an extra whole-image backbone
    pass); `features` is then empty."""
    cuda = segmenter.device.type == "cuda"
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        collate_fn=_Collate(seed, calib_pixels_per_image), pin_memory=cuda,
                        persistent_workers=False, prefetch_factor=4 if num_workers else None)
    acc = OnePassAccumulator(segmenter.device, calib_pixels_per_image, seed)
    with tqdm(total=len(dataset), desc=desc or "evaluate", unit="img") as bar:
        for groups in loader:
            for group in groups:
                logits, features = segmenter.logits_and_features(group["image"], with_features=with_features)
                acc.update(logits, _to_device(group["label"], segmenter.device),
                           _to_device(group["ood"], segmenter.device), features, group["indices"], group["ids"],
                           picks=group["picks"])
            bar.update(sum(len(g["ids"]) for g in groups))
    return acc.result()


def _to_device(tensor: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device, non_blocking=True)


def _histogram(index: torch.Tensor, valid: torch.Tensor, n_bins: int) -> torch.Tensor:
    """int64 counts of integer `index` values in [0, n_bins) where `valid`, without a host sync.

    Bin centres go to `torch.histc` in float64 (exact for these integers); invalid entries are moved out of
    the range, which histc skips."""
    centres = torch.where(valid, index.double() + 0.5, -1.0)
    return torch.histc(centres.flatten(), bins=n_bins, min=0, max=n_bins).long()


def _confusions(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, 19, 19) per-image confusion matrices (rows = ground truth) over the valid pixels."""
    batch, n = pred.shape[0], NUM_CLASSES
    image = torch.arange(batch, device=pred.device).view(batch, 1, 1)
    index = image * (n * n) + labels * n + pred
    valid = (labels >= 0) & (labels < n)
    return _histogram(index, valid, batch * n * n).view(batch, n, n)


#: weighted bin sums go to this many copies of the bins (by image row) to spread the device's atomic adds
_SPREAD = 64


def _weighted_bins(conf: torch.Tensor, correct: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(3, 15) float64 count / confidence sum / correct sum of top-1 confidence bins, (l, u] rule, over
    `valid` pixels: synthrel.metrics.calibration.accumulate_bins without its host-syncing mask selection."""
    idx = confidence_bin_index(conf)
    valid = valid & (idx >= 0)
    counts = _histogram(idx, valid, N_BINS).double()
    rows = torch.arange(conf.shape[1] if conf.ndim > 1 else 1, device=conf.device) % _SPREAD
    slot = (idx.clamp(min=0) + N_BINS * rows.view(-1, *([1] * (conf.ndim - 2)))).flatten()
    sums = torch.zeros(2, _SPREAD * N_BINS, dtype=torch.float64, device=conf.device)
    weight = valid.double()
    sums[0].index_add_(0, slot, (conf.double() * weight).flatten())
    sums[1].index_add_(0, slot, (correct.double() * weight).flatten())
    return torch.cat([counts.view(1, N_BINS), sums.view(2, _SPREAD, N_BINS).sum(1)])
