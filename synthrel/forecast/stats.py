"""Ordinary least squares of real ~ synthetic over a model zoo, its t prediction interval, and leave-one-out.

Why OLS with a t interval: the paper's evidence is a linear relation (Pearson r) between per-model results on
generated and on real data; with n zoo models (tens) the classical interval for a *new observation*,
    y0_hat +- t_{n-2, 1-a/2} * s * sqrt(1 + 1/n + (x0 - mean(x))^2 / Sxx),
has exact coverage under the linear-Gaussian model, widens honestly when the new model lies outside the zoo's
range, and is checked on the zoo itself by leave-one-model-out (MAE and coverage), which the report shows next
to each forecast so that a cell where the assumption fails is visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_MODELS = 3  # two parameters plus at least one residual degree of freedom


@dataclass(frozen=True)
class LinearFit:
    """y = intercept + slope * x fitted on n points; `s` is the residual standard error (n - 2 dof)."""

    slope: float
    intercept: float
    n: int
    s: float
    x_mean: float
    sxx: float

    def predict(self, x0, level: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point forecast and the `level` prediction interval (lo, hi) of a new observation at x0."""
        if not 0 < level < 1:
            raise ValueError(f"prediction interval level must be in (0, 1), got {level}")
        x0 = np.asarray(x0, dtype=np.float64)
        y0 = self.intercept + self.slope * x0
        half = stats.t.ppf(0.5 + level / 2, self.n - 2) * self.s * np.sqrt(
            1 + 1 / self.n + (x0 - self.x_mean) ** 2 / self.sxx)
        return y0, y0 - half, y0 + half


def fit_ols(x, y) -> LinearFit:
    """OLS of y on x (float64); raises ValueError with fewer than 3 points or constant x."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    n = len(x)
    if n < MIN_MODELS:
        raise ValueError(f"a prediction interval needs at least {MIN_MODELS} models, got {n}")
    x_mean = x.mean()
    sxx = float(((x - x_mean) ** 2).sum())
    if sxx == 0:
        raise ValueError("all models have the same synthetic value: the regression is undefined")
    slope = float(((x - x_mean) * (y - y.mean())).sum() / sxx)
    intercept = float(y.mean() - slope * x_mean)
    residuals = y - intercept - slope * x
    s = float(np.sqrt((residuals ** 2).sum() / (n - 2)))
    return LinearFit(slope, intercept, n, s, float(x_mean), sxx)


def leave_one_out(x, y, level: float = 0.9) -> dict[str, np.ndarray]:
    """Forecast each model from the zoo without it: per-model predicted, lo, hi, abs_error, covered.

    Closed forms of the n refits (no refitting): with leverage h_i = 1/n + (x_i - mean)^2 / Sxx and full-fit
    residual e_i, the deleted forecast is y_i - e_i / (1 - h_i), the deleted residual variance
    s_(i)^2 = (SSE - e_i^2 / (1 - h_i)) / (n - 3), and the deleted prediction variance s_(i)^2 / (1 - h_i).
    Needs at least MIN_MODELS + 1 models (each refit has one fewer).
    """
    if not 0 < level < 1:
        raise ValueError(f"prediction interval level must be in (0, 1), got {level}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < MIN_MODELS + 1:
        raise ValueError(f"leave-one-out needs at least {MIN_MODELS + 1} models, got {n}")
    fit = fit_ols(x, y)
    leverage = 1 / n + (x - fit.x_mean) ** 2 / fit.sxx
    if np.any(1 - leverage < 1e-12):
        raise ValueError("leave-one-out: without one model the others' synthetic values are all equal")
    residuals = y - fit.intercept - fit.slope * x
    predicted = y - residuals / (1 - leverage)
    sse_deleted = (residuals ** 2).sum() - residuals ** 2 / (1 - leverage)
    half = stats.t.ppf(0.5 + level / 2, n - 3) * np.sqrt(np.maximum(sse_deleted, 0) / (n - 3) / (1 - leverage))
    lo, hi = predicted - half, predicted + half
    return {"predicted": predicted, "lo": lo, "hi": hi, "abs_error": np.abs(predicted - y),
            "covered": (lo <= y) & (y <= hi)}


def forecast_cell(x, y, models: list[str], x0: float, level: float) -> tuple[dict, list[dict]]:
    """The forecast of one (metric, domain) cell from the zoo's (synthetic x, real y): the prediction at `x0` with
    its interval, the fit, Pearson r, and the zoo's leave-one-model-out rows (one per model) with their MAE and
    coverage; a `note` says why a cell (or its leave-one-out) is missing."""
    from synthrel.analysis.correlation import pearson_along

    x, y = np.asarray(x), np.asarray(y)
    if len(x) < MIN_MODELS or np.ptp(x) == 0:
        return {"note": f"not forecast: {len(x)} zoo model(s); needs {MIN_MODELS} with distinct synthetic "
                        "values"}, []
    fit = fit_ols(x, y)
    predicted, lo, hi = (float(v) for v in fit.predict(x0, level))
    cell = {"predicted": predicted, "lo": lo, "hi": hi, "slope": fit.slope, "intercept": fit.intercept,
            "residual_sd": fit.s, "pearson": pearson_along(x, y).item(), "note": ""}
    try:
        loo = leave_one_out(x, y, level)
    except ValueError as e:  # too few models, or one model carries all the spread in x
        cell["note"] = f"no leave-one-out: {e}"
        return cell, []
    cell.update(loo_mae=float(loo["abs_error"].mean()), loo_coverage=float(loo["covered"].mean()))
    rows = [{"model": m, "synthetic": xi, "real": yi, "predicted": p, "lo": a, "hi": b, "abs_error": e,
             "covered": bool(c)}
            for m, xi, yi, p, a, b, e, c in zip(models, x, y, loo["predicted"], loo["lo"], loo["hi"],
                                                 loo["abs_error"], loo["covered"], strict=True)]
    return cell, rows
