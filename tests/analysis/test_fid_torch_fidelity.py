"""The hand-written FID Inception (synthrel.analysis.inception, the fallback) against torch-fidelity's
FeatureExtractorInceptionV3, which `build_fid` uses where it imports: the same random weights loaded into both,
features to float tolerance, FID to 1e-3.

Skipped where torch-fidelity (or the torchvision it needs) does not import: the locked CPU environment. Run on a
GPU image with torch-fidelity carried: `python -m pytest -q -p no:xdist tests/analysis/test_fid_torch_fidelity.py`.
"""

import numpy as np
import pytest
import torch
from inception_weights import random_inception_weights
from scipy import linalg

from synthrel.analysis import fid
from synthrel.analysis.inception import FIDInceptionV3

pytestmark = pytest.mark.skipif(fid.torch_fidelity_inception() is None,
                                reason="torch-fidelity absent or not importable beside this torch")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random weights that keep activations alive, saved as a plain state dict with FIDInceptionV3's keys, which
    are torch-fidelity's."""
    return random_inception_weights(tmp_path_factory.mktemp("fid") / "random_inception.pth")


def images(seed, n=12, size=(120, 160)):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=gen)


def frechet_low_rank(f1, f2):
    """float64 Frechet distance with fewer images than features (both covariances in the span of the centred
    features: the traces are those of the small projected covariances, where sqrtm is well conditioned)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    q, _ = np.linalg.qr(np.concatenate([f1 - mu1, f2 - mu2]).T)
    a1, a2 = np.cov((f1 - mu1) @ q, rowvar=False), np.cov((f2 - mu2) @ q, rowvar=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(a1 + a2) - 2 * np.trace(linalg.sqrtm(a1 @ a2).real))


def test_features_and_fid_equal_torch_fidelity(weights):
    ours = FIDInceptionV3.from_file(weights)
    theirs = fid.FidelityInception(fid.torch_fidelity_inception(), ours)
    real, synthetic = images(1), images(2)
    with torch.no_grad():
        f = {name: [net(x).double().numpy() for x in (real, synthetic)] for name, net in
             (("ours", ours), ("torch_fidelity", theirs))}
    for a, b in zip(f["ours"], f["torch_fidelity"], strict=True):
        assert a.shape == b.shape == (12, 2048)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    value_ours, value_theirs = frechet_low_rank(*f["ours"]), frechet_low_rank(*f["torch_fidelity"])
    assert abs(value_ours - value_theirs) <= 1e-3 * max(1.0, abs(value_theirs))


def test_build_fid_uses_torch_fidelity_and_records_the_weights(weights):
    metric = fid.build_fid("inception", str(weights))
    assert isinstance(metric.inception, fid.FidelityInception)
    assert metric.inception.weights_sha256 == FIDInceptionV3.from_file(weights).weights_sha256
    assert metric.inception.official_weights is False
