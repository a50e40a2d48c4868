"""Forecast figure: per domain, the zoo's real vs synthetic values, the OLS line with its prediction band,
and the user's model on the line (forecast with its interval) and, when measured, at its real value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthrel.analysis.correlation import paired_values
from synthrel.analysis.figures import save_figure
from synthrel.forecast.stats import fit_ols


def forecast_scatter(table: pd.DataFrame, cells: pd.DataFrame, model_name: str, real_datasets: Mapping[str, str],
                     out_stem: str | Path, max_cols: int = 3) -> list[str]:
    """One panel per forecast cell (rows of `cells`, one metric) over the reference zoo `table`; values in %."""
    n = len(cells)
    cols = min(n, max_cols)
    fig = Figure(figsize=(3.8 * cols, 3.5 * math.ceil(n / cols)), layout="constrained")
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax, (_, cell) in zip(axes, cells.iterrows(), strict=False):
        zoo = paired_values(table, cell["metric"], cell["domain"], cell["generator"], real_datasets=real_datasets)
        x, y = zoo["x"].to_numpy(), zoo["y"].to_numpy()
        x, y = x[np.isfinite(x) & np.isfinite(y)], y[np.isfinite(x) & np.isfinite(y)]  # as the fit (forecast_cell)
        fit = fit_ols(x, y)
        lo_x, hi_x = min(x.min(), cell["synthetic"]), max(x.max(), cell["synthetic"])
        pad = 0.05 * (hi_x - lo_x or 1.0)
        grid = np.linspace(lo_x - pad, hi_x + pad, 50)
        mid, band_lo, band_hi = fit.predict(grid, cell["level"])
        ax.fill_between(100 * grid, 100 * band_lo, 100 * band_hi, color="C0", alpha=0.15, lw=0,
                        label=f"{100 * cell['level']:.0f}% prediction band")
        ax.plot(100 * grid, 100 * mid, color="C0", lw=1.3)
        ax.scatter(100 * x, 100 * y, s=16, color="C0", alpha=0.8, label=f"zoo ({len(x)} models)")
        yerr = [[100 * (cell["predicted"] - cell["lo"])], [100 * (cell["hi"] - cell["predicted"])]]
        ax.errorbar([100 * cell["synthetic"]], [100 * cell["predicted"]], yerr=yerr, fmt="*", ms=13, color="C3",
                    capsize=4, label=f"{model_name}: forecast")
        if not np.isnan(cell["actual"]):
            ax.scatter([100 * cell["synthetic"]], [100 * cell["actual"]], marker="X", s=60, color="black",
                       label=f"{model_name}: measured")
        ax.set_title(f"{cell['domain']} (zoo r={cell['pearson']:.2f})", fontsize=10)
        ax.set_xlabel(f"{cell['metric']} (%) on {cell['generator']}")
        ax.set_ylabel(f"{cell['metric']} (%) on {cell['real_dataset']}")
        ax.grid(alpha=0.3)
    handles = {label: handle for ax in axes[:n] for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(4, len(handles)),
               fontsize=7)  # below the panels: never over a point
    fig.suptitle(f"{cells['metric'].iloc[0]}: forecast of {model_name} from synthetic results")
    return save_figure(fig, out_stem)
