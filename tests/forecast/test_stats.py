"""The forecast statistics against independent references (scipy linregress, the matrix form of OLS, a
brute-force leave-one-out) and by simulation: zoos drawn from a known linear relation plus Gaussian noise."""

import numpy as np
import pytest
from scipy import stats

from synthrel.forecast.stats import fit_ols, leave_one_out

SIM_SEED = 20240921  # every simulated zoo below is drawn from default_rng(SIM_SEED + k)
N_SIMULATIONS = 1000
LEVEL = 0.9


def _matrix_interval(x, y, x0, level):
    """Prediction interval from the design-matrix form: s^2 (1 + x0' (X'X)^-1 x0), lstsq coefficients."""
    design = np.column_stack([np.ones_like(x), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(x) - 2
    s2 = ((y - design @ beta) ** 2).sum() / dof
    v0 = np.array([1.0, x0])
    half = stats.t.ppf(0.5 + level / 2, dof) * np.sqrt(s2 * (1 + v0 @ np.linalg.inv(design.T @ design) @ v0))
    y0 = v0 @ beta
    return y0, y0 - half, y0 + half


def _zoo(rng, n, slope=0.9, intercept=0.05, noise=0.04):
    """A zoo of n models: synthetic x uniform in [0.2, 0.8], real y = intercept + slope x + N(0, noise)."""
    x = rng.uniform(0.2, 0.8, n)
    return x, intercept + slope * x + rng.normal(0, noise, n)


def test_fit_and_interval_match_linregress_and_matrix_form():
    rng = np.random.default_rng(SIM_SEED)
    x, y = _zoo(rng, 11)
    fit = fit_ols(x, y)
    ref = stats.linregress(x, y)
    assert fit.slope == pytest.approx(ref.slope, rel=1e-12)
    assert fit.intercept == pytest.approx(ref.intercept, rel=1e-12)
    for x0 in (0.1, 0.5, 0.95):  # inside and outside the zoo's range
        got = fit.predict(x0, LEVEL)
        np.testing.assert_allclose(got, _matrix_interval(x, y, x0, LEVEL), rtol=1e-10)
    assert fit.predict(1.5, LEVEL)[2] - fit.predict(1.5, LEVEL)[1] > fit.predict(0.5, LEVEL)[2] - \
        fit.predict(0.5, LEVEL)[1]


@pytest.mark.parametrize("n_models", [4, 9, 30])
def test_leave_one_out_equals_brute_force_refits(n_models):
    """The closed forms against n explicit refits (linregress for the line, the matrix form for the interval)."""
    rng = np.random.default_rng(SIM_SEED + n_models)
    x, y = _zoo(rng, n_models)
    x[0] = 1.5  # one high-leverage model
    loo = leave_one_out(x, y, LEVEL)
    for i in range(len(x)):
        rest = np.arange(len(x)) != i
        ref = stats.linregress(x[rest], y[rest])
        assert loo["predicted"][i] == pytest.approx(ref.intercept + ref.slope * x[i], rel=1e-10)
        lo, hi = _matrix_interval(x[rest], y[rest], x[i], LEVEL)[1:]
        np.testing.assert_allclose([loo["lo"][i], loo["hi"][i]], [lo, hi], rtol=1e-10)
        assert loo["abs_error"][i] == pytest.approx(abs(ref.intercept + ref.slope * x[i] - y[i]), rel=1e-10)
        assert loo["covered"][i] == (lo <= y[i] <= hi)


@pytest.mark.parametrize("n_models", [6, 12, 40])
def test_new_model_coverage_over_simulated_zoos(n_models):
    """The 90 % interval covers the real value of a held-out model in 85-95 % of 1000 simulated zoos
    (binomial standard error ~1 %), both for a fresh model and in leave-one-out over every zoo model."""
    covered, loo_covered = [], []
    for k in range(N_SIMULATIONS):
        rng = np.random.default_rng(SIM_SEED + 100 + k)
        x, y = _zoo(rng, n_models + 1)
        _, lo, hi = fit_ols(x[:-1], y[:-1]).predict(x[-1], LEVEL)
        covered.append(lo <= y[-1] <= hi)
        loo_covered.extend(leave_one_out(x[:-1], y[:-1], LEVEL)["covered"])
    assert 0.85 <= np.mean(covered) <= 0.95
    assert 0.85 <= np.mean(loo_covered) <= 0.95


def test_coverage_check_rejects_a_too_narrow_interval():
    """Negative control: the interval of the mean response (no '1 +' term) is far too narrow for a new model,
    and the same simulation reports it (so the coverage test above can fail)."""
    covered = []
    for k in range(N_SIMULATIONS):
        rng = np.random.default_rng(SIM_SEED + 5000 + k)
        x, y = _zoo(rng, 13)
        fit = fit_ols(x[:-1], y[:-1])
        y0 = fit.intercept + fit.slope * x[-1]
        half = stats.t.ppf(0.95, fit.n - 2) * fit.s * np.sqrt(1 / fit.n + (x[-1] - fit.x_mean) ** 2 / fit.sxx)
        covered.append(abs(y[-1] - y0) <= half)
    assert np.mean(covered) < 0.85


def test_degenerate_inputs_are_refused():
    with pytest.raises(ValueError, match="at least 3"):
        fit_ols([0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError, match="same synthetic value"):
        fit_ols([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="at least 4"):
        leave_one_out([0.1, 0.2, 0.3], [0.1, 0.2, 0.4])
    with pytest.raises(ValueError, match="level"):
        fit_ols([0.1, 0.2, 0.3], [0.1, 0.2, 0.4]).predict(0.2, 1.0)
    with pytest.raises(ValueError, match="without one model"):
        leave_one_out([0.1, 0.1, 0.1, 0.3], [0.1, 0.2, 0.4, 0.5])
