"""CalibrateJob end to end on calib_sample.npz files written by the test, and its Hydra stage config."""

import hydra
import numpy as np
import pandas as pd
import pytest
from references import ece, softmax

from synthrel.calibration.job import CalibrateJob
from synthrel.errors import ConfigError


def _write_sample(folder, rng, t_true, n_images=4, per_image=300, ids=None, features=True):
    n = n_images * per_image
    z = (rng.normal(size=(n, 19)) * 4).astype(np.float32)
    p = softmax(z.astype(np.float64) / t_true)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1).astype(np.uint8)
    folder.mkdir(parents=True)
    np.savez(folder / "calib_sample.npz", logits=z, labels=y, image_index=np.repeat(np.arange(n_images), per_image)
             .astype(np.int32), features=rng.random((n_images if features else 0, 8)).astype(np.float32),
             image_ids=np.array(ids or [f"{folder.name}_{i}" for i in range(n_images)]))
    return z, y


def test_calibrate_job_fits_reports_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "results" / "tiny"
    targets = {}
    for model, t_true in (("good", 2.0), ("other", 2.0)):
        _write_sample(root / model / "synthetic_x", rng, t_true)
        targets[model] = _write_sample(root / model / "acdc_rain", rng, t_true)
    pd.DataFrame({"model": ["good"], "family": ["F"], "domain": ["rain"], "generator": ["real"],
                  "profile": ["tiny"], "n_images": [4]}).to_parquet(root / "good" / "acdc_rain" / "metrics.parquet")
    job = CalibrateJob(results_root=str(root), output_dir=str(tmp_path / "calib"),
                       calibration_sets={"synthetic": ["synthetic_x"]}, targets=["acdc_rain"],
                       methods=["global", "per_class"], objective="nll")
    summary = job.run()
    assert summary["fitted"] == 4
    table = pd.read_parquet(tmp_path / "calib" / "calibration.parquet")
    assert set(table["metric"]) == {"ece_raw", "ece_ts", "ece_rel_improvement"}
    row = table[(table.model == "good") & (table.method == "global-nll")].set_index("metric")["value"]
    z, y = targets["good"]
    assert row["ece_raw"] == pytest.approx(ece(z, y), abs=1e-9)
    assert row["ece_ts"] < row["ece_raw"]  # T_true = 2 is learnable from the synthetic set
    assert row["ece_rel_improvement"] == pytest.approx((row["ece_raw"] - row["ece_ts"]) / row["ece_raw"])
    assert table[table.model == "good"]["domain"].iloc[0] == "rain"
    success = pd.read_csv(tmp_path / "calib" / "calibration_summary.csv")
    assert set(success["success_rate"]) == {1.0} and set(success["n_models"]) == {2}
    # a re-run fits nothing and a new target is added from the stored temperatures
    _write_sample(root / "good" / "idd", rng, 2.0)
    _write_sample(root / "other" / "idd", rng, 2.0)
    job2 = CalibrateJob(results_root=str(root), output_dir=str(tmp_path / "calib"),
                        calibration_sets={"synthetic": ["synthetic_x"]}, targets=["acdc_rain", "idd"],
                        methods=["global", "per_class"], objective="nll")
    assert job2.run()["fitted"] == 0
    table = pd.read_parquet(tmp_path / "calib" / "calibration.parquet")
    assert set(table["dataset"]) == {"acdc_rain", "idd"}


def test_calibrate_job_validates_names(tmp_path):
    with pytest.raises(ConfigError, match="targets"):
        CalibrateJob(results_root=".", output_dir=".", targets=[None])


def test_stage_config_instantiates(compose_cfg):
    cfg = compose_cfg("+stage=[calibrate]", "domain=rain")
    job = hydra.utils.instantiate(cfg.stages.calibrate, _convert_="all")
    assert job.targets == ["acdc_rain_test"]  # the relis test split; fitted on cityscapes_calib / synthetic
    assert job.calibration_sets["cityscapes"] == ["cityscapes_calib"]
    assert not job.allow_overlap and job.per_class_rule == "per_channel"
    assert job.calibration_sets["synthetic"] == [f"synthetic_{cfg.backbone.name}_rain"]


def test_samples_without_features_serve_global_ts_and_cluster_ts_says_how_to_get_them(tmp_path):
    """The evaluate stage takes features only for cluster TS (they cost a backbone pass in slide mode)."""
    rng = np.random.default_rng(4)
    root = tmp_path / "results" / "tiny"
    for model in ("a", "b"):
        _write_sample(root / model / "synthetic_x", rng, 2.0, features=False)
        _write_sample(root / model / "acdc_rain", rng, 2.0, features=False)
    kwargs = dict(results_root=str(root), output_dir=str(tmp_path / "calib"),
                  calibration_sets={"synthetic": ["synthetic_x"]}, targets=["acdc_rain"], objective="nll")
    assert CalibrateJob(**kwargs, methods=["global", "per_class"]).run()["fitted"] == 4
    with pytest.raises(ConfigError, match=r"evaluated without them; re-run the evaluate stage with "
                                          r"stages.evaluate.features=windows"):
        CalibrateJob(**kwargs, methods=["cluster"], n_clusters=2).run()
