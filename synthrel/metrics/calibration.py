"""Top-1 calibration error from confidence bins (relis/uncertainty_helpers.py semantics).

Bins are equal-width over [0, 1] with membership conf in (l, u]: a confidence of exactly 0 falls in
no bin, as in relis. Accumulating (count, confidence sum, correct sum) per bin makes ECE streamable.
"""

from __future__ import annotations

import numpy as np
import torch

N_BINS = 15
# The two ECEs of the results tables, as every table caption states them: the paper's (spec 3.2) is computed on
# the pixels sampled per image for calibration; `ece` on every valid pixel is kept under its own name.
ECE_DEFINITIONS = {
    "ece_paper": f"the paper's ECE: {N_BINS} bins over the pixels sampled per image "
                 "(profile.calib_pixels_per_image, 20,000 on the paper profile)",
    "ece": f"ECE over all valid pixels ({N_BINS} bins), not the paper's sampled-pixel ECE",
}
CALIBRATION_ECE = (f"ECE as in the paper: {N_BINS} bins over the pixels sampled per image of the target set "
                   "(the calibration sample)")


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


def _as_logits_labels(logits, labels, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(np.asarray(logits) if not torch.is_tensor(logits) else logits).to(dtype)
    y = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).long().flatten()
    if z.ndim != 2 or z.shape[0] != y.shape[0]:
        raise ValueError(f"expected logits (N, C) and labels (N,), got {tuple(z.shape)} and {tuple(y.shape)}")
    return z, y


def top1_ece(logits, labels, n_bins: int = N_BINS) -> float:
    """15-bin top-1 ECE of softmax(logits) (float64) against labels; pixels must already exclude ignore."""
    z, y = _as_logits_labels(logits, labels)
    conf, pred = torch.softmax(z, dim=1).max(dim=1)
    return ece_from_bins(accumulate_bins(conf, (pred == y).double(), n_bins))


def ece_over_temperatures(
    logits, labels, temperatures, n_bins: int = N_BINS, chunk_elements: int = 2**24, device=None
) -> np.ndarray:
    """ECE of softmax(logits / T) for every T of `temperatures`, without a Python loop over the pixels per T.

    Temperature scaling keeps the argmax, so correctness is computed once; the top-1 confidence at T is
    exp(-logsumexp((z - max z) / T)). Temperatures and pixels are processed in chunks of about
    `chunk_elements` values, accumulating one (count, conf sum, correct sum) histogram per temperature.
    `device` (e.g. "cuda") moves the work to an accelerator; the result is identical up to float64 rounding.
    Logits stay in their dtype in memory (float32 from the engine) and are promoted per chunk.
    """
    source_dtype = logits.dtype if torch.is_tensor(logits) else torch.from_numpy(np.asarray(logits)[:0]).dtype
    dtype = torch.float64 if source_dtype == torch.float64 else torch.float32
    z, y = _as_logits_labels(logits, labels, dtype)
    z, y = z.to(device), y.to(device)
    temps = torch.as_tensor(np.asarray(temperatures, dtype=np.float64).ravel(), device=z.device)
    n, c = z.shape
    bins = torch.zeros(len(temps), 3, n_bins, dtype=torch.float64, device=z.device)
    if n == 0:
        return np.full(len(temps), np.nan)
    correct = (z.argmax(dim=1) == y).double()
    rows = max(1, min(n, chunk_elements // c))
    temps_per_chunk = max(1, chunk_elements // (rows * c))
    for start in range(0, n, rows):
        zc = z[start : start + rows].double()
        g, a = zc - zc.max(dim=1, keepdim=True).values, correct[start : start + rows]
        for t0 in range(0, len(temps), temps_per_chunk):
            t = temps[t0 : t0 + temps_per_chunk]
            conf = torch.exp(-torch.logsumexp(g[None] / t[:, None, None], dim=2))  # (Tc, rows)
            flat = confidence_bin_index(conf, n_bins) + n_bins * torch.arange(len(t), device=z.device)[:, None]
            flat = flat.flatten()
            chunk_bins = torch.zeros(3, len(t) * n_bins, dtype=torch.float64, device=z.device)
            chunk_bins[0].index_add_(0, flat, torch.ones_like(flat, dtype=torch.float64))
            chunk_bins[1].index_add_(0, flat, conf.flatten())
            chunk_bins[2].index_add_(0, flat, a.repeat(len(t)))
            bins[t0 : t0 + len(t)] += chunk_bins.view(3, len(t), n_bins).permute(1, 0, 2)
    count, conf_sum, correct_sum = bins[:, 0], bins[:, 1], bins[:, 2]
    return ((correct_sum - conf_sum).abs().sum(1) / count.sum(1)).cpu().numpy()
