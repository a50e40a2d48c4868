"""Top-1 calibration error from confidence bins (relis/uncertainty_helpers.py semantics).

Bins are equal-width over [0, 1] with membership conf in (l, u]: a confidence of exactly 0 falls in
no bin, as in relis. Accumulating (count, confidence sum, correct sum) per bin makes ECE streamable.
"""

from __future__ import annotations

import numpy as np
import torch

N_BINS = 15


def confidence_bin_index(conf: torch.Tensor, n_bins: int = N_BINS) -> torch.Tensor:
    """Bin index of each confidence under the (l, u] rule; -1 for conf <= 0 (counted in no bin)."""
    idx = torch.ceil(conf * n_bins).long() - 1
    return idx.clamp_(max=n_bins - 1)


def accumulate_bins(conf: torch.Tensor, correct: torch.Tensor, n_bins: int = N_BINS) -> torch.Tensor:
    """(3, n_bins) float64 tensor: count, sum of confidence, sum of correctness per bin, on conf's device."""
    idx = confidence_bin_index(conf.flatten(), n_bins)
    keep = idx >= 0
    idx, c, a = idx[keep], conf.flatten()[keep].double(), correct.flatten()[keep].double()
    out = torch.zeros(3, n_bins, dtype=torch.float64, device=conf.device)
    out[0].index_add_(0, idx, torch.ones_like(c))
    out[1].index_add_(0, idx, c)
    out[2].index_add_(0, idx, a)
    return out


def ece_from_bins(bins) -> float:
    """ECE = sum_b (n_b / N) |acc_b - conf_b| from a (3, n_bins) array of count / conf sum / correct sum."""
    count, conf_sum, correct_sum = (np.asarray(b, dtype=np.float64) for b in torch.as_tensor(bins).cpu())
    total = count.sum()
    if total == 0:
        return float("nan")
    return float(np.abs(correct_sum - conf_sum).sum() / total)
