"""ECE over a temperature grid against a per-temperature loop and torchmetrics."""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from synthrel.metrics.calibration import ece_over_temperatures, top1_ece


def _reference_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """relis _ece_score: conf in (l, u], ECE = sum_b n_b/N |acc_b - conf_b|."""
    conf, pred = probs.max(1), probs.argmax(1)
    acc = (pred == labels).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(acc[inside].mean() - conf[inside].mean())
    return ece


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_top1_ece_matches_torchmetrics_and_reference():
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(3000, 19)) * 2).astype(np.float32)
    y = rng.integers(0, 19, 3000)
    tm = MulticlassCalibrationError(num_classes=19, n_bins=15, norm="l1")
    expected = float(tm(torch.softmax(torch.tensor(z, dtype=torch.float64), 1), torch.tensor(y)))
    assert top1_ece(z, y) == pytest.approx(expected, abs=1e-6)
    assert top1_ece(z, y) == pytest.approx(_reference_ece(_softmax(z.astype(np.float64)), y), abs=1e-12)


def test_ece_over_temperatures_equals_loop_in_any_chunking():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(700, 5)) * 3
    y = rng.integers(0, 5, 700)
    temps = np.arange(0.5, 3, 0.1)
    loop = np.array([_reference_ece(_softmax(z / t), y) for t in temps])
    np.testing.assert_allclose(ece_over_temperatures(z, y, temps), loop, atol=1e-12)
    np.testing.assert_allclose(ece_over_temperatures(z, y, temps, chunk_elements=64), loop, atol=1e-12)
