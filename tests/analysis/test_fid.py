import json

import numpy as np
import pytest
import torch
from inception_weights import random_inception_weights
from scipy import linalg

from synthrel.analysis import fid
from synthrel.errors import DatasetError, WeightsError


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


def test_fid_of_a_single_image_names_the_counts():
    """A set of one image has no feature covariance (found on an H100: the smoke profile's cityscapes_test)."""
    rng = np.random.default_rng(0)
    with pytest.raises(DatasetError, match="at least 2 images on each side.*1 real and 3 synthetic"):
        fid.compute_fid(_images(rng, 1, 0), _images(rng, 3, 30), "tiny", resolution=(32, 32), num_features=8)


def test_inception_without_weights_says_where_to_put_them(tmp_path):
    with pytest.raises(WeightsError, match=r"stages\.fid\.feature_extractor_weights_path=.*missing\.pth"):
        fid.build_fid("inception", str(tmp_path / "missing.pth"))


def _reference_fid_low_rank(f1, f2):
    """Frechet distance in float64 numpy + scipy.linalg.sqrtm, with fewer images than features: both covariances
    live in the span of the centred features, so with an orthonormal basis Q of that span (S_i = Q A_i Q^T) the
    traces of S1 + S2 and of sqrt(S1 S2) are those of the small A_i, where sqrtm is well conditioned."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    q, _ = np.linalg.qr(np.concatenate([f1 - mu1, f2 - mu2]).T)
    a1, a2 = np.cov((f1 - mu1) @ q, rowvar=False), np.cov((f2 - mu2) @ q, rowvar=False)
    covmean = linalg.sqrtm(a1 @ a2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(a1 + a2) - 2 * np.trace(covmean))


@pytest.mark.slow
def test_inception_fid_on_the_tiny_profile_equals_a_scipy_reference(compose_cfg, tmp_path):
    """Standard FID path (Inception-V3 pool3, 2048 features) in the pinned environment: no torchvision, weights
    from a local file; torchmetrics' value against float64 numpy + scipy.linalg.sqrtm on the same features."""
    from hydra.utils import instantiate

    from synthrel.analysis.inception import FIDInceptionV3

    weights = random_inception_weights(tmp_path / "random_inception.pth")
    cfg = compose_cfg("+stage=[fid]", "profile=tiny", "stages.fid.feature_extractor=inception",
                      f"stages.fid.feature_extractor_weights_path={weights}", "stages.fid.batch_size=4",
                      "stages.fid.device=cpu")
    job = instantiate(cfg.stages.fid, _convert_="all")
    assert job.feature_extractor == "inception" and job.resolution == [299, 299]
    rng = np.random.default_rng(2)
    real = [{"id": str(i), "image": im} for i, im in enumerate(_images(rng, 6, 0))]
    synthetic = [{"id": str(i), "image": im} for i, im in enumerate(_images(rng, 5, 40))]
    job.pairs = [{"generator": "sd15", "domain": "fog", "real": real, "synthetic": synthetic}]
    job.output_dir = str(tmp_path / "fid")
    assert job.run()["n_pairs"] == 1
    record = json.loads((tmp_path / "fid" / "fid_manifest.jsonl").read_text().splitlines()[0])
    assert record["num_features"] == 2048 and record["official_weights"] is False
    assert record["weights_sha256"] and record["feature_extractor_weights_path"] == str(weights)

    model = FIDInceptionV3.from_file(weights)
    with torch.no_grad():
        f_real = model(fid.resize_batch([r["image"] for r in real], (299, 299))).double().numpy()
        f_syn = model(fid.resize_batch([s["image"] for s in synthetic], (299, 299))).double().numpy()
    assert f_real.shape == (6, 2048) and f_real.std() > 1e-3  # the random network does not collapse
    reference = _reference_fid_low_rank(f_real, f_syn)
    assert reference > 0
    assert record["fid"] == pytest.approx(reference, rel=1e-3)


def test_inception_weights_with_foreign_keys_are_named(tmp_path):
    from synthrel.analysis.inception import FIDInceptionV3

    state = FIDInceptionV3().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["Mixed_7c.branch_pool.conv.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"bad\.pth.*missing keys: Mixed_7c\.branch_pool\.conv\.weight.*"
                                           r"unexpected keys: extra\.weight"):
        FIDInceptionV3.from_file(tmp_path / "bad.pth")


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
