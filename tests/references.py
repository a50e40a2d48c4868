"""Independent references for the calibration metrics tests, written from the definitions (relis `_ece_score`,
paper S9), in float64 numpy without synthrel: one top-1 ECE, and the same ECE vectorised over a temperature grid
(checked against the loop in tests/calibration/test_reference.py). The OOD metrics' references are in
ood_reference.py."""

import numpy as np

N_BINS = 15


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """float64 softmax, max-subtracted."""
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def ece_of_probs(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """relis _ece_score: top-1 confidence in bins (l, u], ECE = sum_b n_b / N |acc_b - conf_b|."""
    probs = np.asarray(probs, np.float64)
    conf, acc = probs.max(1), (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.sum() / len(labels) * abs(acc[inside].mean() - conf[inside].mean())
    return total


def ece(logits: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-1 ECE of logits (N, C): `ece_of_probs` of their float64 softmax."""
    return ece_of_probs(softmax(logits, axis=1), labels, n_bins)


def eces_over_temperatures(logits: np.ndarray, labels: np.ndarray, temps, chunk: int = 64) -> np.ndarray:
    """`ece(logits / t, labels)` at every temperature t, vectorised: bins by searchsorted ((l, u]) and bincount."""
    z, edges, out = np.asarray(logits, np.float64), np.linspace(0, 1, N_BINS + 1), []
    for start in range(0, len(temps), chunk):
        t = np.asarray(temps[start:start + chunk])
        p = softmax(z[None] / t[:, None, None], axis=2)
        conf, correct = p.max(2), (p.argmax(2) == labels[None]).astype(np.float64)
        bins = np.searchsorted(edges, conf, side="left") - 1 + N_BINS * np.arange(len(t))[:, None]
        count = np.bincount(bins.ravel(), minlength=N_BINS * len(t)).reshape(len(t), N_BINS)
        gap = np.bincount(bins.ravel(), (correct - conf).ravel(), minlength=N_BINS * len(t)).reshape(len(t), N_BINS)
        out.append(np.abs(gap).sum(1) / count.sum(1))
    return np.concatenate(out)
