"""ATC (Garg et al., ICLR 2022) against a brute-force implementation of the paper's definition written here: the
threshold t on source confidences for which the share above t equals the source accuracy, and the predicted
target accuracy as the share of target confidences above t; the rows read from evaluate-style result folders;
ATC as a predictor in the forecast's comparison."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from synthrel.evaluation.results import COLUMNS
from synthrel.forecast.atc import METRIC, atc_rows, max_softmax, predict, threshold


def _brute_force(source_conf, source_correct, target_conf):
    """Every candidate threshold (each source confidence and -inf); the first that brings the share of source
    confidences above it closest to the source accuracy; the share of target confidences above it."""
    accuracy = np.mean(source_correct)
    candidates = np.concatenate([[-np.inf], np.sort(source_conf)])
    gaps = [abs(np.mean(source_conf > t) - accuracy) for t in candidates]
    t = candidates[int(np.argmin(gaps))]
    return t, np.mean(target_conf > t)


def _logits(rng, n, margin):
    """(n, 19) logits whose top class leads by about `margin` (confident pixels: margins 10-50 included)."""
    z = rng.normal(0, 1, (n, 19))
    z[np.arange(n), rng.integers(0, 19, n)] += margin
    return z.astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_threshold_and_prediction_equal_the_brute_force_definition(seed):
    rng = np.random.default_rng(seed)
    source, target = rng.beta(5, 2, 400), rng.beta(3, 3, 300)
    correct = rng.random(400) < source  # confident pixels are right more often
    t, predicted = _brute_force(source, correct, target)
    assert threshold(source, correct) == t
    assert predict(target, threshold(source, correct)) == predicted
    assert np.mean(source > t) == pytest.approx(np.mean(correct), abs=0)  # continuous scores: exact


def test_all_or_no_source_pixel_correct():
    conf = np.linspace(0.1, 0.9, 9)
    assert threshold(conf, np.ones(9, bool)) == -np.inf and predict(conf, -np.inf) == 1.0
    assert predict(conf, threshold(conf, np.zeros(9, bool))) == 0.0
    with pytest.raises(ValueError, match="source pixels"):
        threshold(np.zeros(0), np.zeros(0, bool))


def test_max_softmax_matches_float64_softmax_on_confident_logits():
    rng = np.random.default_rng(0)
    for margin in (0, 5, 10, 30, 50):
        z = _logits(rng, 1000, margin)
        np.testing.assert_allclose(max_softmax(z), softmax(z.astype(np.float64), axis=1).max(axis=1), rtol=1e-14)


def _job(folder, model, dataset, generator, logits, labels):
    folder.mkdir(parents=True)
    np.savez(folder / "calib_sample.npz", logits=logits, labels=labels)
    pd.DataFrame([{"model": model, "family": "Sim", "dataset": dataset, "domain": dataset, "generator": generator,
                   "metric": "mIoU", "cls": "", "value": 0.5, "n_images": 3, "profile": "tiny"}],
                 columns=COLUMNS).to_parquet(folder / "metrics.parquet")
    (folder / "DONE").write_text(json.dumps({"job": f"{model}/{dataset}"}))


def test_atc_rows_from_result_folders_equal_the_brute_force(tmp_path):
    rng = np.random.default_rng(1)
    expected = {}
    for model in ("m0", "m1"):
        src = _logits(rng, 600, rng.uniform(1, 4))
        labels = np.where(rng.random(600) < 0.7, src.argmax(1), rng.integers(0, 19, 600)).astype(np.uint8)
        tgt = _logits(rng, 500, 1.5)
        _job(tmp_path / model / "cityscapes", model, "cityscapes", "real", src, labels)
        _job(tmp_path / model / "acdc_fog", model, "acdc_fog", "real", tgt, np.zeros(500, np.uint8))
        _job(tmp_path / model / "synthetic_sd15_fog", model, "synthetic_sd15_fog", "sd15", tgt, np.zeros(500, np.uint8))
        conf = softmax(src.astype(np.float64), axis=1).max(1)
        expected[model] = _brute_force(conf, src.argmax(1) == labels, softmax(tgt.astype(np.float64), axis=1).max(1))[1]
    (tmp_path / "m1" / "acdc_fog" / "DONE").unlink()  # unfinished: no row
    rows = atc_rows(tmp_path)
    assert list(rows.columns) == COLUMNS
    assert rows[["model", "dataset", "metric"]].values.tolist() == [["m0", "acdc_fog", METRIC]]
    assert rows["value"].item() == pytest.approx(expected["m0"], abs=1e-12)
    assert atc_rows(tmp_path, targets=["idd"]).empty


def test_atc_is_a_predictor_of_miou_where_the_reference_has_its_estimates(tmp_path):
    import hydra
    from forecast_world import DOMAINS, simulated_zoo
    from hydra import compose, initialize_config_dir

    from synthrel.run import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "+experiment=forecast", "profile=tiny", "device=cpu", f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path}/run", "model=tiny_unseen", "stages.forecast.predictors=[atc]"])
    job = hydra.utils.instantiate(cfg.stages.forecast, _convert_="all")
    zoo = simulated_zoo(n_models=10)
    rng = np.random.default_rng(2)
    real = zoo[zoo["dataset"].isin(DOMAINS.values()) & (zoo["metric"] == "mIoU")]
    atc = real.assign(metric=METRIC, value=real["value"] * 0.9 + 0.1 + rng.normal(0, 0.002, len(real)))
    zoo = pd.concat([zoo, atc], ignore_index=True)
    mine = zoo[zoo["model"] == "sim0"].assign(model=job.key)
    job.forecast(zoo[zoo["model"] != "sim0"], mine)
    comparison = job.comparison
    assert set(comparison["predictor"]) == {"sd15", "ATC (Cityscapes val -> real images)"}
    assert set(comparison.loc[comparison["predictor"] != "sd15", "metric"]) == {"mIoU"}  # not ECE
    atc_rows_ = comparison[comparison["predictor"] != "sd15"]
    assert atc_rows_["predicted"].notna().all() and (atc_rows_["loo_mae"] < 0.01).all()
