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
