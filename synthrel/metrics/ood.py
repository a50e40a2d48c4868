"""OOD (anomaly) detection scores and metrics, with the two conventions of the paper's code (spec section 3.4).

Every score is oriented so that higher = more OOD. Every metric is computed from *counts over ascending
score bins* (OOD-pixel and ID-pixel histograms), as bravo_toolkit does: each bin acts as one distinct
threshold, so the exact array versions are the same computation over the unique score values, and a
pooled dataset of millions of pixels never has to be held in memory.

Conventions:
- ``"rba"`` (NazirNayal8/RbA ``support.py``, dataset-level, pooled): AUROC = auc(roc_curve), AP =
  average_precision_score, FPR95 = FPR at the first ROC point (sklearn's ``drop_intermediate`` curve) with
  TPR > 0.95 (strict); pixels labelled 255 are dropped.
- ``"genval"`` (valeoai/GenVal ``ood_detection/metrics.py``, per image): FPR95 = fpr[argmax(tpr >= 0.95)];
  "aupr_in" = trapezoid auc(recall, precision) with OOD as positive, "aupr_out" the same with ID as positive
  (despite the names); every pixel counts (no void handling).
"""

from __future__ import annotations

import numpy as np
import torch

CONVENTIONS = ("rba", "genval")
ENTROPY_EPS = 1e-15


# --------------------------------------------------------------------------------------------- scores
def msp_score(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """-max softmax probability (GenVal "confidence_metrics" with the sign flipped)."""
    return -torch.softmax(logits.float(), dim=dim).amax(dim=dim)


def max_logit_score(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """-max logit (GenVal "logits_metrics")."""
    return -logits.float().amax(dim=dim)


def entropy_score(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax entropy -sum p log(p + 1e-15), GenVal's formula (higher entropy = more OOD)."""
    p = torch.softmax(logits.float(), dim=dim)
    return -(p * torch.log(p + ENTROPY_EPS)).sum(dim=dim)


def rba_score(class_scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """RbA "rejected by all": -sum_c tanh(l_c) over the per-pixel mask-classification class scores l_c."""
    return -torch.tanh(class_scores.float()).sum(dim=dim)


#: Score functions from segmentation logits (B, C, H, W) -> (B, H, W), higher = more OOD.
LOGIT_SCORES = {"msp": msp_score, "max_logit": max_logit_score, "entropy": entropy_score}


# ------------------------------------------------------------------------------------ counts -> metrics
def _roc_points(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (tps, fps) for thresholds at every non-empty bin, from the highest score down."""
    keep = (pos + neg) > 0
    tps = np.cumsum(pos[keep][::-1])
    fps = np.cumsum(neg[keep][::-1])
    return tps, fps


def _drop_intermediate(tps: np.ndarray, fps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sklearn roc_curve(drop_intermediate=True): drop points that are not corners of the curve."""
    if len(fps) <= 2:
        return tps, fps
    corner = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
    return tps[corner], fps[corner]


def _trapezoid_pr_auc(tps: np.ndarray, fps: np.ndarray) -> float:
    """auc(recall, precision) of sklearn's precision_recall_curve (with its final (recall 0, precision 1))."""
    if tps[-1] == 0:
        return float("nan")
    precision = np.r_[1.0, tps / (tps + fps)]
    recall = np.r_[0.0, tps / tps[-1]]
    return float(np.trapezoid(precision, recall))


def ood_metrics_from_counts(pos_counts, neg_counts, convention: str = "rba") -> dict[str, float]:
    """AUROC, AP, FPR95, AUPR-in and AUPR-out (fractions) from OOD (`pos`) and ID (`neg`) score histograms.

    `pos_counts[k]` / `neg_counts[k]` count OOD / ID pixels whose score falls in bin k, bins in
    ascending score order (higher = more OOD). A pixel is called OOD at threshold k when its bin is >= k.
    Metrics are NaN when one of the two classes is empty. `convention` picks the FPR95 rule ("rba": first
    TPR > 0.95; "genval": first TPR >= 0.95); the other metrics are the same in both.
    """
    if convention not in CONVENTIONS:
        from synthrel.errors import unknown_name

        raise unknown_name("OOD metric convention", convention, CONVENTIONS)
    pos = np.asarray(pos_counts, dtype=np.float64).ravel()
    neg = np.asarray(neg_counts, dtype=np.float64).ravel()
    if pos.shape != neg.shape:
        raise ValueError(f"pos_counts {pos.shape} and neg_counts {neg.shape} must have the same bins")
    n_pos, n_neg = pos.sum(), neg.sum()
    nan = float("nan")
    if n_pos == 0 or n_neg == 0:
        return dict(auroc=nan, ap=nan, fpr95=nan, aupr_in=nan, aupr_out=nan)
    tps, fps = _roc_points(pos, neg)

    roc_tps, roc_fps = _drop_intermediate(tps, fps)
    tpr = np.r_[0.0, roc_tps / n_pos]
    fpr = np.r_[0.0, roc_fps / n_neg]
    auroc = float(np.trapezoid(tpr, fpr))
    reached = tpr > 0.95 if convention == "rba" else tpr >= 0.95
    fpr95 = float(fpr[np.argmax(reached)])

    # Step-wise AP (average_precision_score): sum_n (R_n - R_{n-1}) P_n.
    precision = tps / (tps + fps)
    recall_steps = np.diff(np.r_[0.0, tps]) / n_pos
    ap = float(np.sum(recall_steps * precision))

    # ID as the positive class with the opposite score: thresholds run from the lowest bin up.
    id_tps, id_fps = np.cumsum(neg[(pos + neg) > 0]), np.cumsum(pos[(pos + neg) > 0])
    return dict(
        auroc=auroc,
        ap=ap,
        fpr95=fpr95,
        aupr_in=_trapezoid_pr_auc(tps, fps),
        aupr_out=_trapezoid_pr_auc(id_tps, id_fps),
    )


def _counts_over_unique_scores(scores: np.ndarray, is_ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact histograms: one bin per distinct score value, in ascending order."""
    _, inverse = np.unique(scores, return_inverse=True)
    n_bins = int(inverse.max()) + 1 if inverse.size else 0
    pos = np.bincount(inverse[is_ood], minlength=n_bins)
    neg = np.bincount(inverse[~is_ood], minlength=n_bins)
    return pos, neg


def pooled_ood_metrics(scores, labels, ignore: int = 255) -> dict[str, float]:
    """RbA dataset-level metrics over all pixels (concatenate images first): labels 1 OOD, 0 ID, others dropped."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must have the same number of pixels")
    valid = (labels == 0) | (labels == 1)
    unexpected = ~valid & (labels != ignore)
    if unexpected.any():
        raise ValueError(f"labels must be 0 (ID), 1 (OOD) or {ignore} (ignore); got {np.unique(labels[unexpected])}")
    pos, neg = _counts_over_unique_scores(scores[valid], labels[valid] == 1)
    return ood_metrics_from_counts(pos, neg, convention="rba")


def per_image_ood_metrics(scores, labels) -> dict[str, float]:
    """GenVal per-image metrics (auroc, fpr95, aupr_in, aupr_out, plus ap): label 1 = OOD, every other pixel ID."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must have the same number of pixels")
    pos, neg = _counts_over_unique_scores(scores, labels == 1)
    return ood_metrics_from_counts(pos, neg, convention="genval")


def score_histograms(scores, is_ood, edges) -> tuple[np.ndarray, np.ndarray]:
    """(OOD counts, ID counts) of `scores` over ascending `edges` (len n_bins + 1); outside values are clipped.

    Bin k holds edges[k] <= s < edges[k+1] (the last bin is closed); this is the streaming form whose
    metrics approach the exact ones as the bins get finer.
    """
    edges = np.asarray(edges, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_ood = np.asarray(is_ood, dtype=bool).ravel()
    idx = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
    n_bins = len(edges) - 1
    return np.bincount(idx[is_ood], minlength=n_bins), np.bincount(idx[~is_ood], minlength=n_bins)
