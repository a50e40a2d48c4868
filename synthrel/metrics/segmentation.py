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


def _as_float64(confusion) -> np.ndarray:
    if torch.is_tensor(confusion):
        return confusion.detach().cpu().double().numpy()
    return np.asarray(confusion, dtype=np.float64)


def iou_per_class(confusion, absent_classes=()) -> np.ndarray:
    """IoU_c = TP / (row + column - TP) in float64; NaN for an empty union and for `absent_classes`.

    `confusion` is one C x C matrix (IoUs of shape (C,)) or a stack (..., C, C) (IoUs of shape (..., C))."""
    cm = _as_float64(confusion)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    union = cm.sum(-2) + cm.sum(-1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    iou[..., list(absent_classes)] = np.nan
    return iou


def mean_iou(confusion, absent_classes=()):
    """The nanmean of `iou_per_class` (NaN when no class has a union): a float for one matrix, an array (...)
    for a stack (..., C, C) (the data-size ablation's subsets)."""
    iou = iou_per_class(confusion, absent_classes)
    finite = np.isfinite(iou)
    count = finite.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        miou = np.where(count > 0, np.where(finite, iou, 0.0).sum(-1) / count, np.nan)
    return float(miou) if miou.ndim == 0 else miou


def pixel_accuracy(confusion) -> float:
    cm = torch.as_tensor(confusion).cpu().double().numpy()
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def new_confusion(device=None, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    return torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
