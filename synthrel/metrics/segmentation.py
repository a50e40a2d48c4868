"""mIoU from a pooled confusion matrix (relis/metrics_helpers.py semantics), accumulated on the device.

Ignore pixels (label 255, or any label outside 0..18) are excluded; predictions are never ignore. IoU of a
class with an empty union is NaN, classes a dataset cannot contain (IDD's terrain and train) are forced to
NaN, and mIoU is the nanmean over classes of the set's pooled matrix (not a mean of per-image mIoUs).
"""

from __future__ import annotations

import numpy as np
import torch

from synthrel.conventions import NUM_CLASSES


def update_confusion(confusion: torch.Tensor, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Add the (label, pred) pairs of valid pixels to `confusion` (C x C, rows = ground truth), in place."""
    n = confusion.shape[0]
    label = label.flatten().long()
    pred = pred.flatten().long()
    valid = (label >= 0) & (label < n)
    confusion += torch.bincount(label[valid] * n + pred[valid], minlength=n * n).view(n, n)
    return confusion


def iou_per_class(confusion, absent_classes=()) -> np.ndarray:
    """IoU_c = TP / (row + column - TP) in float64; NaN for an empty union and for `absent_classes`."""
    cm = torch.as_tensor(confusion).cpu().double().numpy()
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    iou[list(absent_classes)] = np.nan
    return iou


def mean_iou(confusion, absent_classes=()) -> float:
    iou = iou_per_class(confusion, absent_classes)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(confusion) -> float:
    cm = torch.as_tensor(confusion).cpu().double().numpy()
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def new_confusion(device=None, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    return torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
