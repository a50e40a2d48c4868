"""Ordinary least squares of real ~ synthetic over a model zoo, its t prediction interval, and leave-one-out.

Why OLS with a t interval: the paper's evidence is a linear relation (Pearson r) between per-model results on
generated and on real data; with n zoo models (tens) the classical interval for a *new observation*,
    y0_hat +- t_{n-2, 1-a/2} * s * sqrt(1 + 1/n + (x0 - mean(x))^2 / Sxx),
has exact coverage under the linear-Gaussian model, widens honestly when the new model lies outside the zoo's
range, and is checked on the zoo itself by leave-one-model-out (MAE and coverage), which the report shows next
to each forecast so that a cell where the assumption fails is visible.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)

MIN_MODELS = 3  # two parameters plus at least one residual degree of freedom
#: A predictor whose zoo values span less than this fraction of their magnitude is refused: the fit's slope is
#: then set by rounding (values equal to 1e-14 forecast -1.3e10), not by the models. Real metric values of
#: different models differ by 1e-4 and more.
MIN_RELATIVE_SPREAD = 1e-6
#: Metrics that are fractions in [0, 1]: their point forecasts and intervals are clipped to it (flag `clipped`).
FRACTION_METRICS = ("mIoU", "pixel_acc", "IoU", "ece", "ece_paper", "auroc_*", "ap_*", "fpr95_*", "img_*",
                    "atc_*")


def metric_range(metric: str) -> tuple[float, float] | None:
    """The range of a metric's values ((0, 1) for fractions), None when it is not bounded."""
    return (0.0, 1.0) if any(fnmatch.fnmatchcase(metric, p) for p in FRACTION_METRICS) else None


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


@dataclass(frozen=True)
class MultiFit:
    """y = coef[0] + coef[1:] . x fitted on n points by QR (k regressors); `s` has n - k - 1 dof."""

    coef: np.ndarray
    n: int
    s: float
    cov_unscaled: np.ndarray  # (X'X)^-1 of the design with its intercept column

    def predict(self, x0, level: float = 0.9) -> tuple[float, float, float]:
        """Point forecast and the `level` interval of a new observation at x0 (k values):
        y0 +- t(n-k-1) s sqrt(1 + v0' (X'X)^-1 v0), v0 = (1, x0)."""
        if not 0 < level < 1:
            raise ValueError(f"prediction interval level must be in (0, 1), got {level}")
        v0 = np.concatenate([[1.0], np.atleast_1d(np.asarray(x0, dtype=np.float64))])
        y0 = float(v0 @ self.coef)
        half = stats.t.ppf(0.5 + level / 2, self.n - len(self.coef)) * self.s * np.sqrt(
            1 + v0 @ self.cov_unscaled @ v0)
        return y0, y0 - half, y0 + half


def _design(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    return np.column_stack([np.ones(len(x)), x])


def fit_linear(x, y) -> MultiFit:
    """OLS of y on the columns of x ((n,) or (n, k)) with an intercept, in float64 through a QR decomposition."""
    design, y = _design(x), np.asarray(y, dtype=np.float64)
    n, p = design.shape
    if y.shape != (n,):
        raise ValueError(f"x and y must have one row per model, got {design.shape[0]} and {y.shape}")
    if n < p + 1:
        raise ValueError(f"a prediction interval with {p - 1} predictor(s) needs at least {p + 1} models, got {n}")
    q, r = np.linalg.qr(design)
    if np.abs(np.diag(r)).min() <= 1e-12 * np.abs(np.diag(r)).max():
        raise ValueError("the predictors are constant or collinear over the zoo: the regression is undefined")
    r_inv = np.linalg.inv(r)  # p x p with p <= 3 (scipy's solve_triangular costs ~10 ms a call in BLAS set-up)
    coef = r_inv @ (q.T @ y)
    s = float(np.sqrt(((y - design @ coef) ** 2).sum() / (n - p)))
    return MultiFit(coef, n, s, r_inv @ r_inv.T)


def leave_one_out(x, y, level: float = 0.9) -> dict[str, np.ndarray]:
    """Forecast each model from the zoo without it: per-model predicted, lo, hi, abs_error, covered.

    Closed forms of the n refits (no refitting), for k regressors (x of shape (n,) or (n, k)): with the leverage
    h_i (diagonal of the hat matrix) and full-fit residual e_i, the deleted forecast is y_i - e_i / (1 - h_i), the
    deleted residual variance s_(i)^2 = (SSE - e_i^2 / (1 - h_i)) / (n - k - 2), and the deleted prediction
    variance s_(i)^2 / (1 - h_i). Needs at least k + 3 models (each refit has one fewer).
    """
    if not 0 < level < 1:
        raise ValueError(f"prediction interval level must be in (0, 1), got {level}")
    design, y = _design(x), np.asarray(y, dtype=np.float64)
    n, p = design.shape
    if n < p + 2:
        raise ValueError(f"leave-one-out needs at least {p + 2} models, got {n}")
    fit = fit_linear(x, y)
    q, _ = np.linalg.qr(design)
    leverage = (q ** 2).sum(axis=1)
    if np.any(1 - leverage < 1e-12):
        raise ValueError("leave-one-out: without one model the others' synthetic values are all equal")
    residuals = y - design @ fit.coef
    predicted = y - residuals / (1 - leverage)
    sse_deleted = (residuals ** 2).sum() - residuals ** 2 / (1 - leverage)
    dof = n - p - 1
    half = stats.t.ppf(0.5 + level / 2, dof) * np.sqrt(np.maximum(sse_deleted, 0) / dof / (1 - leverage))
    lo, hi = predicted - half, predicted + half
    return {"predicted": predicted, "lo": lo, "hi": hi, "abs_error": np.abs(predicted - y),
            "covered": (lo <= y) & (y <= hi)}


def _refusal(x: np.ndarray, names: list[str]) -> str:
    """Why the zoo's predictor values cannot carry a fit ('' when they can)."""
    for column, name in zip(x.T, names, strict=True):
        spread, scale = np.ptp(column), np.abs(column).max()
        if spread == 0 or spread < MIN_RELATIVE_SPREAD * scale:
            return (f"not forecast: the zoo's {name} values span {spread:.3g} around {column.mean():.6g} (relative "
                    f"spread below {MIN_RELATIVE_SPREAD:g}), too little for a stable fit")
    if x.shape[1] > 1:
        r = np.corrcoef(x.T)[np.triu_indices(x.shape[1], 1)]
        if np.any(np.abs(r) > 1 - 1e-9):
            return f"not forecast: the zoo's {' and '.join(names)} values are collinear (r = {r.max():.12f})"
    return ""


def forecast_cell(x, y, models: list[str], x0, level: float, bounds: tuple[float, float] | None = None,
                  names: list[str] | None = None) -> tuple[dict, list[dict]]:
    """The forecast of one (metric, domain) cell from the zoo's predictor values x ((n,) or (n, k)) and real
    values y: the prediction at `x0` with its interval, the fit, r, and the zoo's leave-one-model-out rows (one
    per model) with their MAE, coverage and mean interval width.

    Inputs are checked: zoo models with a non-finite value are left out and named (`note`, `n_nonfinite`, the
    log); a non-finite `x0` or too little spread in x refuses the forecast with the reason in `note`; an `x0`
    outside the zoo's range sets `extrapolation`; with `bounds` (a bounded metric) the forecast and the
    intervals are clipped to them, and `clipped` says whether the user's forecast was.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    y, x0 = np.asarray(y, dtype=np.float64), np.atleast_1d(np.asarray(x0, dtype=np.float64))
    names = names or ["synthetic"] * x.shape[1]
    finite = np.isfinite(x).all(axis=1) & np.isfinite(y)
    notes = []
    cell = {"n_models": int(finite.sum()), "n_nonfinite": int((~finite).sum()), "predicted": np.nan, "lo": np.nan,
            "hi": np.nan, "extrapolation": False, "clipped": False}
    if not finite.all():
        bad = [f"{m} ({', '.join(f'{n}={v:g}' for n, v in zip(names, xi, strict=True))}, real={yi:g})"
               for m, xi, yi, ok in zip(models, x, y, finite, strict=True) if not ok]
        notes.append(f"{len(bad)} zoo model(s) left out for non-finite values: {'; '.join(bad)}")
        log.warning("forecast: %s", notes[-1])
        x, y, models = x[finite], y[finite], [m for m, ok in zip(models, finite, strict=True) if ok]
    refusal = (f"not forecast: {len(x)} zoo model(s) with finite values; needs {MIN_MODELS + x.shape[1] - 1}"
               if len(x) < MIN_MODELS + x.shape[1] - 1 else _refusal(x, names))
    if refusal:
        return {**cell, "note": "; ".join([*notes, refusal])}, []
    fit = fit_linear(x, y)
    clip = (lambda v: np.clip(v, *bounds)) if bounds else (lambda v: v)
    from synthrel.analysis.correlation import pearson_along

    # r of the fit: Pearson r of x and y for one predictor, the multiple correlation (r of fitted and y) for more
    along = x[:, 0] if x.shape[1] == 1 else _design(x) @ fit.coef
    cell.update(residual_sd=fit.s, intercept=float(fit.coef[0]), pearson=pearson_along(along, y).item(),
                slope=float(fit.coef[1]) if x.shape[1] == 1 else np.nan)
    if x0.shape != (x.shape[1],):
        notes.append(f"not forecast: your model has no {' + '.join(names)} value")
    elif not np.isfinite(x0).all():
        notes.append(f"not forecast: your model's {' + '.join(names)} value is "
                     f"{', '.join(f'{v:g}' for v in x0)}, not a finite number")
        log.warning("forecast: %s", notes[-1])
    else:
        raw = np.asarray(fit.predict(x0, level))
        clipped = clip(raw)
        cell.update(predicted=float(clipped[0]), lo=float(clipped[1]), hi=float(clipped[2]),
                    clipped=not np.array_equal(raw, clipped),
                    extrapolation=bool(np.any((x0 < x.min(axis=0)) | (x0 > x.max(axis=0)))))
        if cell["clipped"]:
            notes.append(f"clipped to the metric's range [{bounds[0]:g}, {bounds[1]:g}] (unclipped: {raw[0]:.4g} "
                         f"in [{raw[1]:.4g}, {raw[2]:.4g}])")
    try:
        loo = leave_one_out(x, y, level)
    except ValueError as e:  # too few models, or one model carries all the spread in x
        return {**cell, "note": "; ".join([*notes, f"no leave-one-out: {e}"])}, []
    for key in ("predicted", "lo", "hi"):
        loo[key] = clip(loo[key])
    loo["abs_error"], loo["covered"] = np.abs(loo["predicted"] - y), (loo["lo"] <= y) & (y <= loo["hi"])
    cell.update(loo_mae=float(loo["abs_error"].mean()), loo_coverage=float(loo["covered"].mean()),
                loo_width=float((loo["hi"] - loo["lo"]).mean()), note="; ".join(notes))
    rows = [{"model": m, "synthetic": xi[0] if len(xi) == 1 else np.nan, "real": yi, "predicted": p, "lo": a,
             "hi": b, "abs_error": e, "covered": bool(c)}
            for m, xi, yi, p, a, b, e, c in zip(models, x, y, loo["predicted"], loo["lo"], loo["hi"],
                                                 loo["abs_error"], loo["covered"], strict=True)]
    return cell, rows
