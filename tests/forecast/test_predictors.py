"""Predictors compared (#39): the two-regressor fit against the textbook OLS prediction interval in float64, its
leave-one-out against explicit refits, the comparison ranking an informative predictor above an uninformative
one over seeded simulated zoos, and the job's comparison table (best by LOO error, the plain verdict where
synthetic is not better than clean, non-finite zoo rows named)."""

import hydra
import numpy as np
import pandas as pd
import pytest
from forecast_world import simulated_zoo
from hydra import compose, initialize_config_dir
from scipy import stats

from synthrel.errors import ConfigError
from synthrel.forecast.job import CLEAN, _rank
from synthrel.forecast.stats import fit_linear, forecast_cell, leave_one_out
from synthrel.run import CONF_DIR
from synthrel.schemas import check_stage_settings

LEVEL = 0.9
SIM_SEED = 39  # simulated zoo k is drawn from default_rng(SIM_SEED + k)


def _textbook(x1, x2, y, v, level=LEVEL):
    """y = b0 + b1 x1 + b2 x2: normal equations, s^2 = SSE / (n - 3), y0 +- t(n-3) s sqrt(1 + v'(X'X)^-1 v)."""
    design = np.column_stack([np.ones_like(x1), x1, x2]).astype(np.float64)
    xtx_inv = np.linalg.inv(design.T @ design)
    beta = xtx_inv @ design.T @ y
    n = len(y)
    s2 = ((y - design @ beta) ** 2).sum() / (n - 3)
    v0 = np.array([1.0, *v])
    half = stats.t.ppf(0.5 + level / 2, n - 3) * np.sqrt(s2 * (1 + v0 @ xtx_inv @ v0))
    return v0 @ beta, v0 @ beta - half, v0 @ beta + half


def _two(rng, n):
    x1, x2 = rng.uniform(0.2, 0.8, n), rng.uniform(0.3, 0.7, n)
    return x1, x2, 0.1 + 0.6 * x1 + 0.3 * x2 + rng.normal(0, 0.02, n)


def test_two_regressor_interval_is_the_textbook_ols_prediction_interval():
    x1, x2, y = _two(np.random.default_rng(SIM_SEED), 15)
    fit = fit_linear(np.column_stack([x1, x2]), y)
    for v in ((0.5, 0.5), (0.1, 0.9), (1.2, 0.2)):
        np.testing.assert_allclose(fit.predict(v, LEVEL), _textbook(x1, x2, y, v), rtol=1e-10)
    cell, _ = forecast_cell(np.column_stack([x1, x2]), y, [f"m{i}" for i in range(15)], (0.5, 0.5), LEVEL,
                            names=["sd15", "cityscapes"])
    np.testing.assert_allclose([cell["predicted"], cell["lo"], cell["hi"]], _textbook(x1, x2, y, (0.5, 0.5)),
                               rtol=1e-10)
    fitted = np.column_stack([np.ones(15), x1, x2]) @ fit.coef
    assert cell["pearson"] == pytest.approx(np.corrcoef(fitted, y)[0, 1], rel=1e-12)  # multiple correlation


@pytest.mark.parametrize("n_models", [5, 9, 30])
def test_two_regressor_leave_one_out_equals_explicit_refits(n_models):
    x1, x2, y = _two(np.random.default_rng(SIM_SEED + n_models), n_models)
    x1[0] = 1.4  # a high-leverage model
    loo = leave_one_out(np.column_stack([x1, x2]), y, LEVEL)
    for i in range(n_models):
        rest = np.arange(n_models) != i
        predicted, lo, hi = _textbook(x1[rest], x2[rest], y[rest], (x1[i], x2[i]))
        np.testing.assert_allclose([loo["predicted"][i], loo["lo"][i], loo["hi"][i]], [predicted, lo, hi],
                                   rtol=1e-9)
        assert loo["covered"][i] == (lo <= y[i] <= hi)
    with pytest.raises(ValueError, match="at least 5"):
        leave_one_out(np.column_stack([x1, x2])[:4], y[:4], LEVEL)


def test_collinear_predictors_are_refused():
    x1, _, y = _two(np.random.default_rng(1), 10)
    cell, loo = forecast_cell(np.column_stack([x1, 2 * x1 + 0.1]), y, list("abcdefghij"), (0.5, 1.1), LEVEL,
                              names=["sd15", "cityscapes"])
    assert np.isnan(cell["predicted"]) and loo == [] and "collinear" in cell["note"]


def test_the_comparison_ranks_an_informative_predictor_above_an_uninformative_one():
    """Over 200 seeded zoos of 12 models: real = 0.1 + 0.8 x_informative + N(0, 0.03), x_uninformative drawn
    independently. The informative predictor must have the lower LOO MAE in at least 95 % of zoos."""
    right = []
    for k in range(200):
        rng = np.random.default_rng(SIM_SEED + k)
        good, noise = rng.uniform(0.2, 0.7, 12), rng.uniform(0.2, 0.7, 12)
        y = 0.1 + 0.8 * good + rng.normal(0, 0.03, 12)
        models = [f"m{i}" for i in range(12)]
        cells = [{"metric": "mIoU", "domain": "fog", "predictor": name,
                  **forecast_cell(x, y, models, 0.5, LEVEL, bounds=(0, 1))[0]}
                 for name, x in (("sd15", good), (CLEAN, noise))]
        ranked = _rank(pd.DataFrame(cells), "sd15")  # the job's ranking
        right.append(ranked.loc[ranked["best"], "predictor"].item() == "sd15")
        assert ranked.loc[ranked["best"], "loo_mae"].item() == ranked["loo_mae"].min()
    assert np.mean(right) >= 0.95


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("predictors")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "+experiment=forecast", "profile=tiny", "device=cpu", f"paths.root_dir={root}",
            f"paths.output_dir={root}/run", "model=tiny_unseen"])
    return hydra.utils.instantiate(cfg.stages.forecast, _convert_="all")


def _zoo_with_baselines(seed=0):
    """The simulated zoo (real linear in synthetic, clean Cityscapes val uninformative) plus a corruption set that
    carries no information about the real values either."""
    zoo = simulated_zoo(n_models=10)
    rng = np.random.default_rng(seed)
    rows = []
    for model in zoo["model"].unique():
        for metric in ("mIoU", "ece"):
            for dataset, domain, generator in (("corruption_fog", "corruption", "corruption:fog_s3"),):
                rows.append({"model": model, "family": "Sim", "dataset": dataset, "domain": domain,
                             "generator": generator, "metric": metric, "cls": "", "value": rng.uniform(0.2, 0.7),
                             "n_images": 3, "profile": "tiny"})
    return pd.concat([zoo, pd.DataFrame(rows)], ignore_index=True)


def test_job_compares_the_predictors_and_says_where_synthetic_is_not_better(job, tmp_path, monkeypatch):
    monkeypatch.setattr("synthrel.forecast.job.figures.forecast_scatter", lambda *a, **k: [])  # tables only
    zoo = _zoo_with_baselines()
    zoo.loc[(zoo["model"] == "sim4") & (zoo["dataset"] == "synthetic_sd15_fog") & (zoo["metric"] == "mIoU"),
            "value"] = np.nan  # once dropped without a word by the pairing
    mine = zoo[zoo["model"] == "sim0"].assign(model=job.key)
    forecasts, loo = job.forecast(zoo[zoo["model"] != "sim0"], mine)
    comparison = job.comparison
    names = ["sd15", CLEAN, "corruption:fog_s3", f"sd15 + {CLEAN}"]
    for _, cell in comparison.groupby(["metric", "domain"]):
        assert list(cell["predictor"]) == names
        assert cell["best"].sum() == 1
        assert cell.loc[cell["best"], "predictor"].item() in ("sd15", f"sd15 + {CLEAN}")  # informative ones
        assert (cell["verdict"] == "").all()
        assert cell["loo_width"].notna().all() and cell["predicted"].notna().all()
    fog = forecasts[(forecasts["metric"] == "mIoU") & (forecasts["domain"] == "fog")].iloc[0]
    assert fog["n_nonfinite"] == 1 and fog["n_models"] == 8 and "sim4 (sd15=nan" in fog["note"]
    assert set(loo["predictor"]) == set(names)

    # clean made informative and synthetic noise: the verdict says so plainly, in the table and the report title
    swapped = zoo.copy()
    synthetic, clean = swapped["dataset"] == "synthetic_sd15_fog", swapped["dataset"] == "cityscapes_test"
    for metric in ("mIoU", "ece"):
        s = synthetic & (swapped["metric"] == metric)
        c = clean & (swapped["metric"] == metric)
        values = swapped.loc[s].set_index("model")["value"]
        swapped.loc[c, "value"] = swapped.loc[c, "model"].map(values).fillna(0.5).to_numpy()
        swapped.loc[s, "value"] = np.random.default_rng(5).uniform(0.2, 0.7, s.sum())
    mine = swapped[swapped["model"] == "sim0"].assign(model=job.key)
    forecasts, loo = job.forecast(swapped[swapped["model"] != "sim0"], mine)
    fog = job.comparison[(job.comparison["domain"] == "fog") & (job.comparison["metric"] == "ece")]
    verdict = fog.loc[fog["predictor"] == "sd15", "verdict"].item()
    assert verdict.startswith("synthetic is not better than clean Cityscapes val here")
    index = job._write(forecasts, loo, swapped, mine, tmp_path)
    table = next(i for i in index if i.get("md", "").endswith("forecast_predictors_table.md"))
    assert "Synthetic is NOT better than clean Cityscapes val (LOO MAE) for: fog mIoU, fog ece" in table["title"]
    text = (tmp_path / "forecast_predictors_table.md").read_text()
    assert "best" in text and "synthetic is not better than clean" in text
    shown = pd.read_csv(tmp_path / "forecast_predictors.csv")
    assert set(shown["predictor"]) == set(names)


def test_predictors_select_what_runs_and_unknown_ones_are_refused(job, tmp_path):
    zoo = _zoo_with_baselines()
    mine = zoo[zoo["model"] == "sim0"].assign(model=job.key)
    job.predictors = ["clean"]
    try:
        job.forecast(zoo[zoo["model"] != "sim0"], mine)
    finally:
        job.predictors = ["clean", "corruptions", "synthetic+clean", "atc"]
    assert set(job.comparison["predictor"]) == {"sd15", CLEAN}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "+experiment=forecast", "profile=tiny", "device=cpu", "model=tiny_unseen", f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path}/run", "stages.forecast.predictors=[clean,atlantis]"])
    with pytest.raises(ConfigError, match=r"`stages.forecast.predictors\[1\]` is 'atlantis' \(str\); expected one of "
                                          "'synthetic', 'clean'"):
        check_stage_settings(cfg)  # the run's check of every stage's settings, before the preflight
