"""ATC, Average Thresholded Confidence (Garg et al., ICLR 2022), for segmentation pixels.

ATC predicts a model's accuracy on a target domain from its confidences there, without target labels: on
labeled source data it fits the threshold t for which the share of pixels with confidence above t equals the
source pixel accuracy, and it predicts the target pixel accuracy as the share of target pixels with confidence
above t. Confidence is the max softmax of the logits (ATC-MC). Source is Cityscapes as `real_split` reports it
(`cityscapes_test`, or all of val under real_split=all); the pixels are the
evaluate stage's seeded per-image sample (`calib_sample.npz`, `profile.calib_pixels_per_image` per image, void
pixels left out), read for the source and for each real target set. The forecast stage uses the ATC estimate
(`atc_acc` rows) as one more predictor of pixel accuracy and mIoU, mapped to the metric linearly over the zoo.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from synthrel.evaluation.results import COLUMNS, is_done

log = logging.getLogger(__name__)

METRIC = "atc_acc"
SAMPLE = "calib_sample.npz"
#: the labeled source set, as real_split reports Cityscapes: its test split (frankfurt), else all of val
SOURCES = ("cityscapes_test", "cityscapes")
CHUNK = 1 << 20  # pixels per softmax chunk (float64: 19 x 8 MB)


def max_softmax(logits: np.ndarray) -> np.ndarray:
    """Max softmax per row, 1 / sum(exp(z - max z)), in float64 and in chunks (samples hold millions of pixels)."""
    out = np.empty(len(logits))
    for start in range(0, len(logits), CHUNK):
        z = np.asarray(logits[start:start + CHUNK], dtype=np.float64)
        out[start:start + CHUNK] = 1.0 / np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)
    return out


def threshold(confidence: np.ndarray, correct: np.ndarray) -> float:
    """The t with #(confidence > t) = #correct on the source: the (n - k)-th smallest confidence for k correct of
    n (ties may leave the share a little off, as in the paper's implementation); -inf when all are correct."""
    confidence = np.sort(np.asarray(confidence, dtype=np.float64))
    n, k = len(confidence), int(np.count_nonzero(correct))
    if n == 0:
        raise ValueError("ATC needs source pixels to fit its threshold")
    return float(-np.inf if k == n else confidence[n - k - 1])


def predict(confidence: np.ndarray, t: float) -> float:
    """Predicted target accuracy: the share of target pixels with confidence above t."""
    return float(np.mean(np.asarray(confidence) > t))


def atc_rows(root: str | Path, targets=None) -> pd.DataFrame:
    """`atc_acc` rows, one per (model, real target set), for the finished results under `root`: threshold fitted
    on the model's Cityscapes val sample, predicted from its target sample (its labels unused). `targets`: the
    target dataset keys (None: every real set except the source)."""
    rows = []
    model_dirs = sorted({p.parent.parent for name in SOURCES for p in Path(root).rglob(f"{name}/{SAMPLE}")})
    for model_dir in model_dirs:
        source = next((model_dir / name / SAMPLE for name in SOURCES if (model_dir / name / SAMPLE).is_file()
                       and is_done(model_dir / name)), None)
        if source is None:
            continue
        with np.load(source) as sample:
            logits = sample["logits"]  # each access of an npz member reads it again
            t = threshold(max_softmax(logits), logits.argmax(axis=1) == sample["labels"])
            del logits
        for folder in sorted(p for p in source.parent.parent.iterdir() if p.is_dir() and p.name not in SOURCES):
            if not ((folder / SAMPLE).is_file() and (folder / "metrics.parquet").is_file() and is_done(folder)):
                continue
            meta = pd.read_parquet(folder / "metrics.parquet").iloc[0]
            if meta["generator"] != "real" or (targets is not None and meta["dataset"] not in targets):
                continue
            with np.load(folder / SAMPLE) as sample:
                value = predict(max_softmax(sample["logits"]), t)
            rows.append({**{k: meta[k] for k in ("model", "family", "dataset", "domain", "generator", "n_images",
                                                 "profile")}, "metric": METRIC, "cls": "", "value": value})
    log.info("ATC: %d (model, target) estimates under %s", len(rows), root)
    return pd.DataFrame(rows, columns=COLUMNS)
