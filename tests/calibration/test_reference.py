"""Temperature scaling and the calibrate stage against an independent float64 reference written here from the
spec (S9, 3.2, 3.3): scipy softmax, a 15-bin (l, u] ECE loop, relis' sequential grid search over
np.arange(0.5, 10, 0.01) that keeps T = 1 unless strictly beaten, one search per raw predicted class.
Adversarial inputs: confident logits (margins 10-50), tied logits, classes never predicted, a class predicted
on three pixels, void labels, calibration and test sets that share images.
"""

import json

import numpy as np
import pandas as pd
import pytest
from references import ece, eces_over_temperatures, softmax

from synthrel.calibration.data import CalibSample
from synthrel.calibration.job import CalibrateJob
from synthrel.calibration.temperature import fit_temperature_scaler
from synthrel.errors import ConfigError, DatasetError

GRID = np.arange(0.5, 10, 0.01)  # relis --min_t 0.5 --max_t 10 --step 0.01
N_CLASSES = 19


def ref_grid_search(z, y):
    """relis' loop: start at T = 1, move only on a strictly lower ECE."""
    best_t, best = 1.0, ece(z, y)
    for t, e in zip(GRID, eces_over_temperatures(z, y, GRID), strict=True):
        if e < best:
            best_t, best = t, e
    return best_t


def test_vectorised_reference_equals_the_plain_loop():
    z, y = adversarial_pixels(np.random.default_rng(9), n=200)
    temps = GRID[::97]
    np.testing.assert_allclose(eces_over_temperatures(z, y, temps), [ece(z / t, y) for t in temps], atol=1e-12)


def ref_per_class(z, y):
    pred = np.asarray(z).argmax(1)
    t = np.ones(N_CLASSES)
    for c in np.unique(pred):
        t[c] = ref_grid_search(z[pred == c], y[pred == c])
    return t


def adversarial_pixels(rng, n=1200, t_true=1.8):
    """float32 logits of 19 classes: confident rows, exact ties, classes 16-18 never predicted, class 15
    predicted on exactly three pixels; labels drawn from softmax(z / t_true) (over-confident model)."""
    z = rng.normal(size=(n, N_CLASSES)) * 2.0
    z[:, 15:] -= 60
    confident = rng.random(n) < 0.3
    top = rng.integers(0, 15, n)
    z[confident, top[confident]] += rng.uniform(10, 50, confident.sum())
    tied = np.flatnonzero(~confident)[:100]
    z[tied, 3] = z[tied, 7] = z[tied].max(1) + 1.0  # two equal maxima: argmax takes the first (class 3)
    z[:3, 15] = z[:3].max(1) + 5.0  # class 15: predicted on three pixels only
    z = z.astype(np.float32)
    p = softmax(z.astype(np.float64) / t_true, axis=1)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return z, y


def test_reference_matches_the_spec_grid():
    assert len(GRID) == 950 and GRID[0] == 0.5 and GRID[-1] == pytest.approx(9.99)


@pytest.mark.parametrize("seed", [0, 1])
def test_global_and_per_class_ece_grid_equal_the_independent_search(seed):
    rng = np.random.default_rng(seed)
    z, y = adversarial_pixels(rng)
    pred = z.argmax(1)
    t_global = fit_temperature_scaler(z, y, method="global").temperatures
    assert np.all(t_global == t_global[0, 0]) and t_global[0, 0] == pytest.approx(ref_grid_search(z, y), abs=1e-9)
    got = fit_temperature_scaler(z, y, method="per_class").temperatures[0]
    want = ref_per_class(z, y)
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert set(np.flatnonzero(got == 1.0)) >= {16, 17, 18}  # never predicted: T = 1
    assert len(set(np.unique(pred))) >= 15  # the three-pixel class took part in the search


def _write(folder, z, y, ids, rng):
    folder.mkdir(parents=True, exist_ok=True)
    image_index = np.repeat(np.arange(len(ids)), -(-len(y) // len(ids)))[: len(y)].astype(np.int32)
    np.savez(folder / "calib_sample.npz", logits=z, labels=np.asarray(y, np.uint8), image_index=image_index,
             features=rng.random((len(ids), 4)).astype(np.float32), image_ids=np.array(ids))


@pytest.mark.parametrize("rule", ["per_channel", "per_pred_class"])
def test_calibrate_job_per_class_ts_equals_the_reference_on_the_target(tmp_path, rule):
    rng = np.random.default_rng(3)
    root = tmp_path / "results" / "zoo"
    zc, yc = adversarial_pixels(rng)
    zt, yt = adversarial_pixels(rng, n=800)
    _write(root / "m" / "synthetic_sd15_fog", zc, yc, [f"fog_{i:05d}_frankfurt" for i in range(6)], rng)
    _write(root / "m" / "acdc_fog_test", zt, yt, [f"GOPR0475_frame_{i:06d}" for i in range(4)], rng)
    CalibrateJob(results_root=str(root), output_dir=str(tmp_path / "calib"),
                 calibration_sets={"synthetic": ["synthetic_sd15_fog"]}, targets=["acdc_fog_test"],
                 methods=["per_class"], per_class_rule=rule).run()
    table = pd.read_parquet(tmp_path / "calib" / "calibration.parquet").set_index("metric")
    t = ref_per_class(zc, yc)
    z = zt.astype(np.float64)
    scaled = z / t[None, :] if rule == "per_channel" else z / t[z.argmax(1)][:, None]
    assert table.loc["ece_raw", "value"] == pytest.approx(ece(z, yt), abs=1e-9)
    assert table.loc["ece_ts", "value"] == pytest.approx(ece(scaled, yt), abs=1e-9)
    assert set(table["method"]) == {f"per_class-{rule}"} and set(table["per_class_rule"]) == {rule}
    assert set(table["n_shared_images"]) == {0}


def _sets(tmp_path, calib_ids, target_ids):
    rng = np.random.default_rng(0)
    root = tmp_path / "results" / "zoo"
    for model in ("a", "b"):
        z, y = adversarial_pixels(rng, n=300)
        _write(root / model / "cityscapes", z, y, calib_ids, rng)
        z, y = adversarial_pixels(rng, n=300)
        _write(root / model / "cityscapes_test", z, y, target_ids, rng)
    return root


CITY = [f"{c}_000000_{i:06d}" for c in ("frankfurt", "lindau", "munster") for i in range(3)]


def test_overlap_between_calibration_and_target_is_refused_before_any_fit(tmp_path):
    root = _sets(tmp_path, CITY, CITY[:3])  # the whole val set vs its frankfurt split
    job = CalibrateJob(results_root=str(root), output_dir=str(tmp_path / "calib"),
                       calibration_sets={"cityscapes": ["cityscapes"]}, targets=["cityscapes_test"])
    with pytest.raises(ConfigError, match=r"'cityscapes' .* and target 'cityscapes_test' share 3 image\(s\)"
                                          r".*stages\.calibrate\.allow_overlap=true"):
        job.run()
    assert not (tmp_path / "calib" / "cityscapes").exists()  # nothing fitted


def test_overlap_allowed_by_name_is_counted_per_row_and_ids_are_recorded(tmp_path):
    calib_ids, target_ids = CITY[2:], CITY[:5]  # share CITY[2:5]
    root = _sets(tmp_path, calib_ids, target_ids)
    CalibrateJob(results_root=str(root), output_dir=str(tmp_path / "calib"),
                 calibration_sets={"cityscapes": ["cityscapes"]}, targets=["cityscapes_test"],
                 allow_overlap=True).run()
    table = pd.read_parquet(tmp_path / "calib" / "calibration.parquet")
    assert len(table) == 6 and set(table["n_shared_images"]) == {len(set(calib_ids) & set(target_ids))} == {3}
    record = json.loads((tmp_path / "calib" / "cityscapes" / "global" / "a.json").read_text())
    assert record["calib_image_ids"] == sorted(calib_ids) and record["allow_overlap"] is True
    assert record["targets"]["cityscapes_test"]["image_ids"] == sorted(target_ids)
    assert record["targets"]["cityscapes_test"]["n_shared_images"] == 3


def test_void_labels_in_a_calibration_sample_are_an_error(tmp_path):
    rng = np.random.default_rng(0)
    z, y = adversarial_pixels(rng, n=50)
    y[:5] = 255
    _write(tmp_path / "s", z, y, ["x"], rng)
    with pytest.raises(DatasetError, match="labels hold 255.*ignore pixels must be dropped"):
        CalibSample.load(tmp_path / "s" / "calib_sample.npz")
