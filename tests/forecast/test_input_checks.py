"""The forecast checks its inputs (#34 item 7): non-finite zoo values are named, counted and left out; a
non-finite value of the user's model refuses the forecast; a model outside the zoo's range is flagged; bounded
metrics are clipped to [0, 1]; too little spread in the zoo is refused. Numbers against a float64 least-squares
fit written here (numpy lstsq and the textbook interval)."""

import logging

import numpy as np
import pytest
from scipy import stats

from synthrel.forecast.stats import forecast_cell, metric_range

LEVEL = 0.9


def _reference(x, y, x0, level=LEVEL):
    """Textbook OLS prediction interval in float64: lstsq coefficients, s^2 (1 + v0' (X'X)^-1 v0), t(n-2)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    design = np.column_stack([np.ones_like(x), x])
    beta = np.linalg.lstsq(design, y, rcond=None)[0]
    s2 = ((y - design @ beta) ** 2).sum() / (len(x) - 2)
    v0 = np.array([1.0, x0])
    half = stats.t.ppf(0.5 + level / 2, len(x) - 2) * np.sqrt(s2 * (1 + v0 @ np.linalg.inv(design.T @ design) @ v0))
    return v0 @ beta, v0 @ beta - half, v0 @ beta + half


def _zoo(n=12, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.3, 0.7, n)
    return x, 0.05 + 0.8 * x + rng.normal(0, 0.02, n), [f"m{i}" for i in range(n)]


def test_non_finite_zoo_values_are_named_counted_and_left_out(caplog):
    x, y, models = _zoo()
    x[3], y[5], x[7] = np.nan, np.inf, -np.inf
    with caplog.at_level(logging.WARNING, logger="synthrel.forecast.stats"):
        cell, loo = forecast_cell(x, y, models, 0.5, LEVEL)
    keep = np.isfinite(x) & np.isfinite(y)
    assert cell["n_nonfinite"] == 3 and cell["n_models"] == 9 and len(loo) == 9
    for name in ("m3", "m5", "m7"):
        assert name in cell["note"] and name in caplog.text
    assert "3 zoo model(s) left out for non-finite values" in cell["note"]
    np.testing.assert_allclose([cell["predicted"], cell["lo"], cell["hi"]], _reference(x[keep], y[keep], 0.5),
                               rtol=1e-10)
    assert np.isfinite(cell["loo_mae"]) and 0 < cell["loo_coverage"] <= 1
    assert {r["model"] for r in loo} == {m for m, k in zip(models, keep, strict=True) if k}


@pytest.mark.parametrize("x0", [np.nan, np.inf, -np.inf])
def test_a_non_finite_user_value_refuses_the_forecast_with_its_reason(x0):
    x, y, models = _zoo()
    cell, loo = forecast_cell(x, y, models, x0, LEVEL)
    assert np.isnan([cell["predicted"], cell["lo"], cell["hi"]]).all()
    assert "not forecast: your model's synthetic value is" in cell["note"] and "not a finite number" in cell["note"]
    assert np.isfinite(cell["loo_mae"]) and len(loo) == len(x)  # the zoo's validation still stands


def test_a_model_outside_the_zoo_range_is_flagged_as_extrapolation():
    x, y, models = _zoo()
    inside = forecast_cell(x, y, models, float(np.median(x)), LEVEL)[0]
    for x0 in (x.min(), x.max()):
        assert not forecast_cell(x, y, models, x0, LEVEL)[0]["extrapolation"]
    assert not inside["extrapolation"]
    for x0 in (x.min() - 1e-6, x.max() + 0.01, 1.5):
        assert forecast_cell(x, y, models, x0, LEVEL)[0]["extrapolation"]


def test_bounded_metrics_are_clipped_to_their_range_and_say_so():
    assert metric_range("mIoU") == metric_range("auroc_msp") == metric_range("fpr95_entropy") == (0.0, 1.0)
    assert metric_range("ece") == metric_range("ap_max_logit") == (0.0, 1.0)
    assert metric_range("some_loss") is None
    x, y, models = _zoo()
    y = np.clip(y + 0.2, 0, 1)  # real values near the top of the range
    for x0 in (1.5, 0.98):  # the cases: forecast 148 %, interval above 100 %
        raw = _reference(x, y, x0)
        cell, loo = forecast_cell(x, y, models, x0, LEVEL, bounds=(0.0, 1.0))
        assert raw[2] > 1  # the unclipped interval leaves the range
        np.testing.assert_allclose([cell["predicted"], cell["lo"], cell["hi"]], np.clip(raw, 0, 1), rtol=1e-10)
        assert cell["clipped"] and "clipped to the metric's range [0, 1]" in cell["note"]
        assert all(0 <= r["lo"] <= r["hi"] <= 1 and 0 <= r["predicted"] <= 1 for r in loo)
    unbounded = forecast_cell(x, y, models, 1.5, LEVEL)[0]
    assert not unbounded["clipped"] and unbounded["hi"] > 1
    inside = forecast_cell(x, y, models, 0.5, LEVEL, bounds=(0.0, 1.0))[0]
    assert not inside["clipped"] and "clipped" not in inside["note"]


def test_a_spread_too_small_for_a_stable_fit_is_refused():
    """The issue's case: synthetic values 1e-14 apart forecast -1.3e10 through the `ptp == 0` guard."""
    x = 0.5 + 1e-14 * np.arange(8)
    y = 0.4 + 0.01 * np.random.default_rng(0).normal(size=8)
    cell, loo = forecast_cell(x, y, [f"m{i}" for i in range(8)], 0.6, LEVEL)
    assert np.isnan(cell["predicted"]) and loo == []
    assert "too little for a stable fit" in cell["note"]
    for same in (np.full(8, 0.5), np.zeros(8)):
        assert "too little for a stable fit" in forecast_cell(same, y, list("abcdefgh"), 0.5, LEVEL)[0]["note"]
    ok = forecast_cell(0.5 + 1e-3 * np.arange(8), y, list("abcdefgh"), 0.5, LEVEL)[0]  # a real, small spread
    assert np.isfinite(ok["predicted"]) and ok["note"] == ""


def test_too_few_finite_models_are_refused_after_leaving_out_the_non_finite_ones():
    x, y, models = _zoo(n=4)
    x[:2] = np.nan
    cell, loo = forecast_cell(x, y, models, 0.5, LEVEL)
    assert np.isnan(cell["predicted"]) and loo == []
    assert "2 zoo model(s) left out" in cell["note"] and "not forecast: 2 zoo model(s) with finite values" in \
        cell["note"]
