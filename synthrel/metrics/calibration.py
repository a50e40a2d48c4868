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
    exp(-log sum exp((z - max z) / T)). A chunk of about `chunk_elements` values holds up to 64 temperatures laid
    out (rows, T), and one weighted `bincount` sums correct - conf per (T, bin), all the ECE needs besides the
    counts: on CUDA a shared-memory histogram, where float64 `index_add_` into 15 bins serialised on atomics.
    `device` (e.g. "cuda") moves the work to an accelerator; the result is identical up to float64 rounding.
    Logits stay in their dtype in memory (float32 from the engine) and are promoted per chunk.
    """
    source_dtype = logits.dtype if torch.is_tensor(logits) else torch.from_numpy(np.asarray(logits)[:0]).dtype
    dtype = torch.float64 if source_dtype == torch.float64 else torch.float32
    z, y = _as_logits_labels(logits, labels, dtype)
    z, y = z.to(device), y.to(device)
    temps = torch.as_tensor(np.asarray(temperatures, dtype=np.float64).ravel(), device=z.device)
    n, c = z.shape
    if n == 0:
        return np.full(len(temps), np.nan)
    gap = torch.zeros(len(temps), n_bins, dtype=torch.float64, device=z.device)  # sum of correct - conf
    count = torch.zeros(len(temps), dtype=torch.float64, device=z.device)
    correct = (z.argmax(dim=1) == y).double()
    temps_per_chunk = max(1, min(len(temps), 64, chunk_elements // c))
    rows = max(1, min(n, chunk_elements // (temps_per_chunk * c)))
    for start in range(0, n, rows):
        zc = z[start : start + rows].double()
        g, a = zc - zc.max(dim=1, keepdim=True).values, correct[start : start + rows, None]
        for t0 in range(0, len(temps), temps_per_chunk):
            t = temps[t0 : t0 + temps_per_chunk]
            conf = torch.exp(-(g[:, None, :] / t[None, :, None]).exp_().sum(2).log_())  # (rows, Tc)
            idx = confidence_bin_index(conf, n_bins)
            count[t0 : t0 + len(t)] += (idx >= 0).sum(0)
            flat = idx + 1 + (n_bins + 1) * torch.arange(len(t), device=z.device)  # column 0: conf <= 0
            sums = torch.bincount(flat.flatten(), weights=(a - conf).flatten(), minlength=len(t) * (n_bins + 1))
            gap[t0 : t0 + len(t)] += sums.view(len(t), n_bins + 1)[:, 1:]
    return (gap.abs().sum(1) / count).cpu().numpy()
