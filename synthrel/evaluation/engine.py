"""One forward pass per (model, dataset) feeding every metric, accumulated on the device.

Per batch of equal-size images the logits give, on the device: the confusion matrix (mIoU), ECE bins
over all valid pixels, the paper's calibration protocol (a seeded random draw of pixels per image, ignore
dropped after the draw) whose logits are kept for temperature fitting, per-image backbone features, and, for
datasets with an OOD mask, three per-pixel OOD scores (max softmax, max logit, entropy) whose exact metrics
`synthrel.metrics.ood.OODAccumulator` keeps: GenVal's per image over every pixel (one sort per image on the
device) and RbA's pooled over the dataset (exact counts per distinct float32 score, void left out).

Nothing in the loop waits for the device but the OOD counts (below): DataLoader workers stack each size group
into (pinned) tensors and draw the calibration pixels on the host; no other boolean-mask selection runs per
batch. Counts are integer histograms of int32 values (on CUDA `torch.histc`, whose per-block shared-memory
bins take native int32 atomics; on the CPU `bincount`), and the float64 confidence sums of the ECE bins are
`scatter_add_`-ed into copies of the bins spread by pixel position, so that no two neighbouring pixels (one
warp) add to one address whatever the confidence distribution. The per-pixel scores come from one function,
`softmax_scores` (max softmax as `torch.softmax` computes it); eager, the max and argmax are the library reduction
over the class axis (`class_scores`), compiled, element-wise over the class planes (`class_scores_by_plane`).
Inductor's fused exp may still move a handful of pixels to a neighbouring bin. The OOD metrics (`OODAccumulator`,
compiled separately) take each image's scores after the statistics; handing each image's runs of tied scores to
the pooled counts waits for the device once per score and batch (their number is data-dependent). Ignore pixels
of the calibration draw are dropped once, in `result()`.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

from synthrel.conventions import IGNORE_INDEX, NUM_CLASSES
from synthrel.errors import SynthrelError
from synthrel.jobs import item_rng
from synthrel.metrics.calibration import N_BINS, confidence_bin_index
from synthrel.metrics.ood import OODAccumulator
from synthrel.metrics.segmentation import new_confusion
from synthrel.runstats import SteadyRate

log = logging.getLogger(__name__)

#: OOD scores per pixel, each oriented higher = more OOD: -max softmax, -max logit, softmax entropy.
OOD_SCORES = ("msp", "max_logit", "entropy")


class NonFiniteLogitsError(SynthrelError):
    """A model's logits hold NaN or inf: every metric from them would be a plausible-looking wrong number."""


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
    ood: dict | None  # OODAccumulator.result() over OOD_SCORES, per-image arrays in dataset order


class OnePassAccumulator:
    """Device-side accumulators fed batch by batch; `result()` is the only host transfer.

    `compile=True` compiles the per-batch statistics (`batch_statistics`, one function of device tensors) with
    torch.compile, the class reductions written plane by plane, so that they and the bin arithmetic fuse into
    one kernel that reads the logits once; recompiled per batch shape. The OOD curves stay eager (faster).
    """

    def __init__(self, device, calib_pixels_per_image: int, seed: int, compile: bool = False):
        self.device = torch.device(device)
        self.calib_pixels = calib_pixels_per_image
        self.seed = seed
        self.statistics = (torch.compile(functools.partial(batch_statistics, by_plane=True), dynamic=False)
                           if compile else batch_statistics)
        self.confusion = new_confusion(self.device)
        self.image_confusions: list[torch.Tensor] = []
        self.ece_bins = torch.zeros(3, N_BINS, dtype=torch.float64, device=self.device)
        self.ece_paper_bins = torch.zeros_like(self.ece_bins)
        self.calib = defaultdict(list)
        self.features: list[torch.Tensor] = []
        self.ood = OODAccumulator(OOD_SCORES, self.device)
        self.has_ood = False
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
        if labels is not None and self.calib_pixels:
            if picks is None:
                picks = torch.from_numpy(calibration_picks(self.seed, indices, *logits.shape[2:], self.calib_pixels))
            picks = picks.to(self.device, non_blocking=True)
        else:
            picks = None
        stats = self.statistics(logits, labels, oods, picks)
        if labels is not None:
            self.has_labels = True
            self.image_confusions.append(stats["confusions"])
            self.confusion += stats["confusions"].sum(0)
            self.ece_bins += stats["ece_bins"]
        if picks is not None:
            k = picks.shape[1]
            self.ece_paper_bins += stats["ece_paper_bins"]
            for key in ("logits", "labels", "keep"):
                self.calib[key].append(stats[f"calib_{key}"])
            self.calib["image_index"].append(np.repeat(np.asarray(indices, dtype=np.int32), k))
        if oods is not None:
            self.has_ood = True
            self.ood.update(stats["ood_scores"], oods)

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
        if self.has_ood:
            ood = self.ood.result()
            if len(ood["per_image"]) != n:
                raise AssertionError("every image of a dataset with OOD masks must have an OOD mask")
            ood["per_image"], ood["image_pixels"] = ood["per_image"][order], ood["image_pixels"][order]
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


def batch_statistics(logits: torch.Tensor, labels: torch.Tensor | None, oods: torch.Tensor | None,
                     picks: torch.Tensor | None, by_plane: bool = False) -> dict[str, torch.Tensor]:
    """What one batch adds to every accumulator, from device tensors only (no host value, no sync).

    confusions (B, 19, 19); ece_bins (3, 15) over valid pixels; with `picks` (B, k) the paper's calibration
    sample: calib_logits (B*k, 19), calib_labels (B*k,) uint8, calib_keep (B*k,) (ignore pixels are dropped
    later, as relis drops them after the draw, and get zero weight in ece_paper_bins); with `oods`,
    ood_scores (3, B, H, W) float32, the OOD_SCORES oriented higher = more OOD.
    `by_plane`: the per-pixel scores by `class_scores_by_plane` (for torch.compile).
    """
    out = {}
    logits = logits.float()
    scores = class_scores_by_plane if by_plane else class_scores
    pred, conf, max_logit, entropy = scores(logits, with_entropy=oods is not None)
    if labels is not None:
        valid = (labels >= 0) & (labels < NUM_CLASSES)
        out["confusions"] = _confusions(pred, labels, valid)
        out["ece_bins"] = _weighted_bins(conf, pred == labels, valid)
        if picks is not None:
            batch, n_classes = logits.shape[:2]
            k = picks.shape[1]
            lab = labels.flatten(1).gather(1, picks).long()  # (B, k)
            z = logits.flatten(2).gather(2, picks.unsqueeze(1).expand(batch, n_classes, k)).transpose(1, 2)
            keep = lab != IGNORE_INDEX
            z_conf, z_pred = torch.softmax(z, dim=2).max(dim=2)
            out["ece_paper_bins"] = _weighted_bins(z_conf, z_pred == lab, keep)
            out["calib_logits"] = z.reshape(batch * k, n_classes)
            out["calib_labels"] = lab.reshape(-1).to(torch.uint8)
            out["calib_keep"] = keep.reshape(-1)
    if oods is not None:
        out["ood_scores"] = torch.stack([-conf, -max_logit, entropy])
    return out


def softmax_scores(logits: torch.Tensor, max_logit: torch.Tensor, pred: torch.Tensor,
                   with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Max softmax and softmax entropy per pixel of (B, C, H, W) float logits, given their max and argmax: the
    one formula of the eager and the compiled paths, so that `stages.evaluate.compile` does not change MSP.

    Max softmax as `torch.softmax` computes it, and so as GenVal's float32 MSP: 1 / S, S = sum_c exp(l_c - max)
    added class by class from class 0 in float32, the order of ATen's softmax over a non-last dim (CPU and CUDA).
    exp(max - logsumexp) rounded far more confident pixels to exactly 1.0 (issue #34: 26.1 % against 16.6 %).
    Entropy, with x_c = l_c - max <= 0, e_c = exp(x_c) and r = sum of e_c over the classes other than the top
    one: log1p(r) - sum_c e_c x_c / S, two non-negative terms, so it keeps its relative precision for confident
    pixels (margin 50: ~1e-19), where log S - sum p l cancels to rounding noise in float32. Every operation runs
    on the (B, H, W) class planes, in class order: compiled, one pointwise kernel that reads each logit once and
    writes no (B, C, H, W) temporary (whole-tensor exp and unbind made inductor store one); eager on the CPU as fast
    as the whole-tensor operations.
    """
    shifted = [plane - max_logit for plane in logits.unbind(1)]
    weights = [torch.exp(x) for x in shifted]
    total = sum(weights)
    entropy = None
    if with_entropy:
        rest = sum(torch.where(pred == c, 0.0, w) for c, w in enumerate(weights))
        entropy = torch.log1p(rest) - sum(w * x for w, x in zip(weights, shifted, strict=True)) / total
    return 1 / total, entropy


def class_scores(logits: torch.Tensor, with_entropy: bool = True) -> tuple[torch.Tensor, ...]:
    """Per pixel of (B, C, H, W) float logits: top-1 class (int32, the first of tied maxima), its softmax
    confidence and the softmax entropy (None unless `with_entropy`) by `softmax_scores`, and the max logit."""
    max_logit, pred = logits.max(dim=1)
    conf, entropy = softmax_scores(logits, max_logit, pred, with_entropy)
    return pred.int(), conf, max_logit, entropy


def class_scores_by_plane(logits: torch.Tensor, with_entropy: bool = True) -> tuple[torch.Tensor, ...]:
    """`class_scores` with the max and argmax as element-wise operations over the C contiguous (B, H, W) class
    planes: the same values (`softmax_scores` then takes the same inputs).

    Compiled, this is one pointwise kernel that reads each logit once, coalesced; inductor's reduction over the
    strided class axis read the planes scattered and took 2-3 ms per four 2-Mpx images on an H200
    (docs/benchmarks.md). Eager, `class_scores` is the faster one.
    """
    planes = logits.unbind(1)
    max_logit, pred = planes[0], torch.zeros_like(planes[0], dtype=torch.int32)
    for c, plane in enumerate(planes[1:], 1):
        better = plane > max_logit  # strictly: the first of tied maxima wins, as in torch.max
        max_logit, pred = torch.where(better, plane, max_logit), torch.where(better, c, pred)
    conf, entropy = softmax_scores(logits, max_logit, pred, with_entropy)
    return pred, conf, max_logit, entropy


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
                     "image": _stacked([s["image"] for s in samples])}
            for field in ("label", "ood"):
                group[field] = None if samples[0][field] is None else _stacked([s[field] for s in samples])
            group["picks"] = None
            if group["label"] is not None and self.calib_pixels:
                height, width = samples[0]["image"].shape[:2]
                group["picks"] = torch.from_numpy(calibration_picks(self.seed, indices, height, width,
                                                                    self.calib_pixels))
            groups.append(group)
        return groups


def _stacked(arrays: list[np.ndarray]) -> torch.Tensor:
    """The arrays stacked into one tensor by torch's default_collate, which in a loader worker stacks straight
    into shared memory (a tensor made here would be copied there to cross to the main process). Read-only arrays
    (PIL's) are only read; views with negative strides are copied first (torch cannot hold them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return default_collate([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])


def evaluate_dataset(segmenter, dataset, *, batch_size: int = 1, num_workers: int = 0,
                     calib_pixels_per_image: int = 20000, seed: int = 0, desc: str = "",
                     features: str | None = None, compile_metrics: bool = False,
                     rate: SteadyRate | None = None) -> EvalOutputs:
    """Run `segmenter` once over `dataset`; images of one loader batch are grouped by size.

    `features` ("whole" or "windows", synthrel.zoo.predictor.FEATURE_MODES) also takes per-image backbone
    features for cluster temperature scaling; None leaves them empty. `compile_metrics` compiles the per-batch
    statistics (OnePassAccumulator). `rate` (the stage's SteadyRate) counts the images after the first batch."""
    rate = rate or SteadyRate()
    cuda = segmenter.device.type == "cuda"
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        collate_fn=_Collate(seed, calib_pixels_per_image), pin_memory=cuda,
                        persistent_workers=False, prefetch_factor=4 if num_workers else None)
    acc = OnePassAccumulator(segmenter.device, calib_pixels_per_image, seed, compile=compile_metrics)
    nonfinite, ids = [], []  # per image, counted on the device and checked once at the end (no sync per batch)
    with tqdm(total=len(dataset), desc=desc or "evaluate", unit="img") as bar, rate.loop():
        for groups in loader:
            for group in groups:
                logits, image_features = segmenter.logits_and_features(group["image"], features=features)
                nonfinite.append((~torch.isfinite(logits)).flatten(1).sum(1))
                ids.extend(group["ids"])
                acc.update(logits, _to_device(group["label"], segmenter.device),
                           _to_device(group["ood"], segmenter.device), image_features, group["indices"], group["ids"],
                           picks=group["picks"])
            bar.update(sum(len(g["ids"]) for g in groups))
            rate.tick(sum(len(g["ids"]) for g in groups))
    bad = torch.cat(nonfinite).cpu().numpy() if nonfinite else np.zeros(0)
    if bad.any():
        names = [i for i, n in zip(ids, bad, strict=True) if n]
        raise NonFiniteLogitsError(
            f"model {segmenter.key!r} gave non-finite logits (NaN or inf) on {len(names)} of {len(ids)} image(s), "
            f"e.g. {names[:3]} ({int(bad.max())} values in the worst); its weights or precision are broken "
            "(a checkpoint with NaN weights, fp16 overflow: try precision=fp32). Nothing was written")
    return acc.result()


def _to_device(tensor: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device, non_blocking=True)


#: int32 bins per `torch.histc` call on CUDA (half as many int64): with the dropped bin and 8 guard bytes within
#: the 48 KiB of shared memory per block of its per-block kernel; with more bins histc adds to global memory
_HISTC_MAX_BINS = 12000


def _histogram(index: torch.Tensor, valid: torch.Tensor, n_bins: int) -> torch.Tensor:
    """int64 counts of integer `index` values in [0, n_bins) where `valid`, without a host sync."""
    return _count_below(torch.where(valid, index, n_bins), n_bins)


def _count_below(values: torch.Tensor, n_bins: int) -> torch.Tensor:
    """int64 counts of the values 0..n_bins-1 among non-negative integer `values`, without a host sync;
    larger values (at most a few times n_bins: the CPU counts them too) are not counted.

    On CUDA the counts come from `histc` on the integers (exact integer bin arithmetic, integer atomics in
    per-block shared memory as long as a call's bins fit); its last bin is closed, so each call covers one
    extra bin, dropped, which collects the first value past its range."""
    values = values.flatten()
    if not values.is_cuda:
        return torch.bincount(values, minlength=n_bins)[:n_bins]
    max_bins = _HISTC_MAX_BINS * 4 // values.element_size()
    return torch.cat([torch.histc(values, bins=size + 1, min=start, max=start + size + 1)[:size]
                      for start, size in _histc_ranges(n_bins, max_bins)]).long()


def _histc_ranges(n_bins: int, max_bins: int) -> list[tuple[int, int]]:
    """(first bin, bins) of the histc calls covering n_bins bins."""
    return [(start, min(max_bins, n_bins - start)) for start in range(0, n_bins, max_bins)]


#: float64 bin sums go to this many copies of the bins, by pixel position modulo it
_SPREAD = 1024


def _bin_sums(values: torch.Tensor, weights: torch.Tensor, n_bins: int) -> torch.Tensor:
    """float64 sums of `weights` per value 0..n_bins-1 of integer `values`; values n_bins..2 n_bins are not
    summed. Without a host sync: consecutive pixels add into different copies of the bins (position modulo
    _SPREAD), so the device's atomic adds never queue on one address however concentrated the bins."""
    values, weights = values.flatten().long(), weights.flatten().double()
    sums = torch.zeros(2 * n_bins + 1, _SPREAD, dtype=torch.float64, device=weights.device)
    whole = values.numel() - values.numel() % _SPREAD
    sums.scatter_add_(0, values[:whole].view(-1, _SPREAD), weights[:whole].view(-1, _SPREAD))
    if whole < values.numel():
        sums[:, : values.numel() - whole].scatter_add_(0, values[whole:].view(1, -1), weights[whole:].view(1, -1))
    return sums[:n_bins].sum(1)


def _confusions(pred: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 19, 19) per-image confusion matrices (rows = ground truth) over the valid pixels (labels 0..18
    unless `valid` is given), counted in one histogram with each image's matrix at its own offset."""
    batch, n = pred.shape[0], NUM_CLASSES
    if valid is None:
        valid = (labels >= 0) & (labels < n)
    image = torch.arange(batch, dtype=torch.int32, device=pred.device).view(batch, 1, 1)
    return _histogram(labels.int() * n + pred.int() + image * (n * n), valid, batch * n * n).view(batch, n, n)


def _weighted_bins(conf: torch.Tensor, correct: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(3, 15) float64 count / confidence sum / correct sum of top-1 confidence bins, (l, u] rule, over
    `valid` pixels (`correct` boolean): synthrel.metrics.calibration.accumulate_bins without its host-syncing
    mask selection.
    Counts and correct counts are one integer histogram over (correct, bin); only the confidence sums are
    floating point."""
    idx = confidence_bin_index(conf).int()  # int32: ATen's int64 atomics are compare-and-swap loops
    binned = torch.where(valid & (idx >= 0), idx, 2 * N_BINS)  # the rest past the (correct, bin) bins
    counts = _count_below(binned.add(correct, alpha=N_BINS), 2 * N_BINS).view(2, N_BINS).double()
    return torch.stack([counts.sum(0), _bin_sums(binned, conf, N_BINS), counts[1]])
