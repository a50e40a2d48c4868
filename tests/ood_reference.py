"""Independent references for the OOD metrics tests: sklearn called as GenVal and RbA call it, a brute-force
pairwise AUROC in float64, and max softmax with torch.softmax's float32 arithmetic written in numpy."""

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve


def genval_reference(conf: np.ndarray, mask: np.ndarray) -> dict:
    """valeoai/GenVal ood_detection/metrics.py `auc_and_fpr_recall`, conf = ID confidence, mask 1 = OOD."""
    fpr, tpr, _ = roc_curve(mask, -conf)
    precision_in, recall_in, _ = precision_recall_curve(mask, -conf)
    precision_out, recall_out, _ = precision_recall_curve(1 - mask, conf)
    return {"auroc": auc(fpr, tpr), "fpr95": fpr[np.argmax(tpr >= 0.95)], "aupr_in": auc(recall_in, precision_in),
            "aupr_out": auc(recall_out, precision_out)}


def rba_reference(scores: np.ndarray, labels: np.ndarray) -> dict:
    """NazirNayal8/RbA OODEvaluator: labels in {0, 1} only, AUROC, AP, FPR at the first TPR > 0.95."""
    keep = (labels == 0) | (labels == 1)
    y, s = labels[keep], scores[keep]
    fpr, tpr, _ = roc_curve(y, s)
    return {"auroc": auc(fpr, tpr), "ap": average_precision_score(y, s),
            "fpr95": next(f for t, f in zip(tpr, fpr, strict=True) if t > 0.95)}


def brute_force_auroc(scores: np.ndarray, is_ood: np.ndarray) -> float:
    """P(OOD score > ID score) + P(tie) / 2 over every (OOD, ID) pair, float64."""
    s = scores.astype(np.float64)
    diff = s[is_ood][:, None] - s[~is_ood][None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def float32_max_softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Max softmax with the arithmetic of torch.softmax over a non-last dim (and so of GenVal's float32 MSP), in
    numpy: exp(l_c - max) in float64 rounded to float32, added in float32 class by class from class 0, and the
    float32 reciprocal of that sum (the top class's exp is 1)."""
    z = np.moveaxis(np.asarray(logits, np.float32), axis, 0).astype(np.float64)
    weights = np.exp(z - z.max(0)).astype(np.float32)
    total = np.zeros(weights.shape[1:], np.float32)
    for w in weights:
        total = total + w
    return np.float32(1) / total
