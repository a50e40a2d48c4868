import json

import numpy as np
import pytest
import torch
from scipy import linalg

from synthrel.analysis import fid
from synthrel.errors import WeightsError


def _images(rng, n, shift):
    return [np.clip(rng.normal(110 + shift, 40, (40 + 8 * (i % 2), 56, 3)), 0, 255).astype(np.uint8)
            for i in range(n)]


def _reference_fid(f1, f2):
    """Frechet distance with numpy means/covariances and scipy's matrix square root."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_equals_independent_numpy_scipy_computation():
    rng = np.random.default_rng(0)
    real, synthetic = _images(rng, 40, 0), _images(rng, 36, 30)
    out = fid.compute_fid(real, synthetic, "tiny", resolution=(32, 32), batch_size=16, num_features=8, seed=3)
    extractor = fid.TinyFeatureExtractor(num_features=8, seed=3)
    with torch.no_grad():
        f_real = extractor(fid.resize_batch(real, (32, 32))).double().numpy()
        f_syn = extractor(fid.resize_batch(synthetic, (32, 32))).double().numpy()
    assert out["fid"] == pytest.approx(_reference_fid(f_real, f_syn), rel=1e-4)
    assert out["n_real"] == 40 and out["n_synthetic"] == 36
    assert out["resolution"] == [32, 32] and out["extractor_seed"] == 3
    same = fid.compute_fid(real, real, "tiny", resolution=(32, 32), num_features=8)
    assert abs(same["fid"]) < 1e-3 < out["fid"]


def test_inception_without_weights_says_what_to_install_or_download(tmp_path):
    with pytest.raises(WeightsError, match="torch-fidelity|feature_extractor_weights_path"):
        fid.build_fid("inception", str(tmp_path / "missing.pth"))


def test_fid_job_writes_table4_and_resumes(tmp_path):
    rng = np.random.default_rng(1)
    real = [{"id": str(i), "image": im} for i, im in enumerate(_images(rng, 6, 0))]
    synthetic = [{"id": str(i), "image": im} for i, im in enumerate(_images(rng, 6, 20))]
    pairs = [{"generator": g, "domain": d, "real": f"acdc_{d}", "synthetic": synthetic}
             for g in ("sd15", "cityscapes") for d in ("fog", "night")]
    job = fid.FIDJob(pairs=pairs, output_dir=str(tmp_path), resolution=[32, 32], num_features=4, max_images=5,
                     profile="tiny", device="cpu", dataset_configs={"acdc_fog": real, "acdc_night": real})
    assert job.run()["n_pairs"] == 4
    table = (tmp_path / "table4_fid.md").read_text()
    assert table.splitlines()[0].split("|")[1:-1] == [" generator   ", "   fog ", "   night "]
    assert "sd15" in table and "cityscapes" in table
    records = [json.loads(line) for line in (tmp_path / "fid_manifest.jsonl").read_text().splitlines()]
    assert {r["real"] for r in records} == {"acdc_fog", "acdc_night"} and {r["max_images"] for r in records} == {5}
    job.pairs = [{**pairs[0], "real": None}]  # would crash if it were recomputed
    assert job.run()["n_pairs"] == 4
