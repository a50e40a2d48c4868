"""ECE over a temperature grid against a per-temperature loop and torchmetrics."""

import numpy as np
import pytest
import torch
from references import ece
from torchmetrics.classification import MulticlassCalibrationError

from synthrel.metrics.calibration import ece_over_temperatures, top1_ece


def test_top1_ece_matches_torchmetrics_and_reference():
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(3000, 19)) * 2).astype(np.float32)
    y = rng.integers(0, 19, 3000)
    tm = MulticlassCalibrationError(num_classes=19, n_bins=15, norm="l1")
    expected = float(tm(torch.softmax(torch.tensor(z, dtype=torch.float64), 1), torch.tensor(y)))
    assert top1_ece(z, y) == pytest.approx(expected, abs=1e-6)
    assert top1_ece(z, y) == pytest.approx(ece(z, y), abs=1e-12)


def test_ece_over_temperatures_equals_loop_in_any_chunking():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(700, 5)) * 3
    y = rng.integers(0, 5, 700)
    temps = np.arange(0.5, 3, 0.1)
    loop = np.array([ece(z / t, y) for t in temps])
    np.testing.assert_allclose(ece_over_temperatures(z, y, temps), loop, atol=1e-12)
    np.testing.assert_allclose(ece_over_temperatures(z, y, temps, chunk_elements=64), loop, atol=1e-12)


def _brute_force_ece(z: np.ndarray, y: np.ndarray, t: float, n_bins: int = 15) -> float:
    """ECE from its definition, pixel by pixel in float64: bins (b / n_bins, (b + 1) / n_bins]."""
    bins = np.zeros((n_bins, 3))
    for row, label in zip(z / t, y, strict=True):
        e = np.exp(row - row.max())
        conf = e.max() / e.sum()
        for b in range(n_bins):
            if b / n_bins < conf <= (b + 1) / n_bins:
                bins[b] += (1.0, conf, float(row.argmax() == label))
    return float(np.abs(bins[:, 2] - bins[:, 1]).sum() / bins[:, 0].sum())


def test_ece_over_temperatures_adversarial_chunks():
    """Confident pixels (margin ~50), tied logits, void labels, chunks splitting rows and temperatures unevenly."""
    rng = np.random.default_rng(2)
    z = rng.normal(size=(301, 7)).astype(np.float32)
    z[:60, 0] += 50  # confidence 1.0 at small T
    z[60:90] = 1.5  # all classes tied: argmax is class 0, conf 1/7
    z[90:120, :2] = 4.0  # two tied top classes
    y = rng.integers(0, 7, len(z))
    y[::9] = 255  # void labels: never correct
    temps = np.linspace(0.5, 9.99, 70)  # 64 + 6 temperatures per row chunk at the larger chunkings
    expected = [_brute_force_ece(z.astype(np.float64), y, t) for t in temps]
    for chunk in (13, 50, 64 * 7 * 40, 2**24):  # 301 rows: 40 * 7 + 21
        np.testing.assert_allclose(ece_over_temperatures(z, y, temps, chunk_elements=chunk), expected, atol=1e-12)
