"""Paper-style figures (PNG + PDF beside the CSV they come from).

Figures are built with matplotlib's object API (`Figure`, Agg canvas) rather than pyplot, so nothing depends
on a display or a global backend and no figure leaks between calls in long multirun processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthrel.analysis.correlation import REAL_DATASETS, Bootstrap, correlate, paired_values
from synthrel.errors import DatasetError
from synthrel.jobs import atomic_path
from synthrel.reporting import format_cell

FORMATS = ("png", "pdf")


def series_colors(n: int) -> list:
    """n distinct colours: matplotlib's tab10/tab20 up to 20 series, evenly spaced on a hue wheel beyond."""
    if n <= 10:
        return [matplotlib.colormaps["tab10"](k) for k in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](k) for k in range(n)]
    return [matplotlib.colormaps["hsv"](k / n) for k in range(n)]


def save_figure(fig: Figure, out_stem: str | Path, formats: Sequence[str] = FORMATS) -> list[str]:
    paths = []
    for fmt in formats:
        path = Path(f"{out_stem}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(str(path))
    return paths


def _grid(n_panels: int, width: float = 3.6, height: float = 3.4, max_cols: int = 5):
    cols = min(n_panels, max_cols)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def scatter_synthetic_vs_real(
    results: pd.DataFrame,
    metric: str,
    generator: str,
    domains: Sequence[str],
    out_stem: str | Path,
    real_datasets: Mapping[str, str] = REAL_DATASETS,
) -> list[str]:
    """Fig. 3: per domain, each model's metric on the predictor set vs on real data, with a least-squares line."""
    panels = [(d, paired_values(results, metric, d, generator, real_datasets=real_datasets)) for d in domains]
    panels = [(d, p) for d, p in panels if len(p)]
    if not panels:
        raise _no_pairs(results, metric, generator, domains, real_datasets)
    fig, axes = _grid(len(panels))
    for ax, (domain, pairs) in zip(axes, panels, strict=False):
        x, y = 100 * pairs["x"].to_numpy(), 100 * pairs["y"].to_numpy()
        ax.scatter(x, y, s=18, alpha=0.8)
        stats_row = correlate(x, y, Bootstrap(n_resamples=0))
        if len(pairs) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            grid = np.linspace(x.min(), x.max(), 2)
            ax.plot(grid, slope * grid + intercept, color="C3", lw=1.5)
        ax.set_title(f"{domain}: r={format_cell(stats_row['pearson'])}, ρ={format_cell(stats_row['spearman'])}")
        ax.set_xlabel(f"{metric} (%) on {generator}")
        ax.set_ylabel(f"{metric} (%) on {real_datasets[domain]}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric}: {generator} vs real (n={max(len(p) for _, p in panels)} models)")
    return save_figure(fig, out_stem)


def _no_pairs(results: pd.DataFrame, metric: str, generator: str, domains: Sequence[str],
              real_datasets: Mapping[str, str]) -> DatasetError:
    """The error for a Fig. 3 without one model on both sides: the model names and files of each side."""
    def side(rows: pd.DataFrame) -> str:
        models = sorted(set(rows["model"].astype(str)))
        sources = sorted(set(rows["source"].astype(str))) if "source" in rows else []
        return f"{models[:5]}{' ...' if len(models) > 5 else ''} (from {sources[:2]}{' ...' if len(sources) > 2 else ''})"

    cell = results[(results["metric"] == metric) & (results["cls"] == "")]
    predictor = cell[cell["generator"] == generator]
    real = cell[cell["dataset"].isin([real_datasets[d] for d in domains if d in real_datasets])]
    return DatasetError(
        f"correlate: no model has {metric} results both on {generator} and on the real sets of {list(domains)}: "
        f"{generator} has models {side(predictor)}, the real sets have {side(real)}. The model names must match: "
        "evaluate the same zoo on both (the evaluate stage names models by their zoo key), or point results_root "
        "at the results of one zoo")


def ece_improvement_figure(
    calibration: pd.DataFrame,
    robustness: Mapping[str, Mapping[str, float]],
    domains: Sequence[str],
) -> Figure:
    """Fig. 6 / Fig. 14: relative ECE improvement per model, models ordered by robustness (real mIoU).

    `calibration` holds `ece_rel_improvement` rows with columns model, domain, calib_set, method; each
    (calib_set, method) pair is one bar series, with one colour in every panel and one legend beside the panels
    (never over the bars). `robustness[domain][model]` is the real-data mIoU; models without it go first, in
    name order.
    """
    rel = calibration[calibration["metric"] == "ece_rel_improvement"]
    panels = [d for d in domains if (rel["domain"] == d).any()]
    if not panels:
        raise ValueError(f"no ece_rel_improvement rows for domains {list(domains)}")
    series = sorted(set(zip(rel["calib_set"], rel["method"], strict=True)))
    colors = dict(zip(series, series_colors(len(series)), strict=True))
    n_models = rel["model"].nunique()
    # panels as wide as their bars need (a few points per bar), one above the other
    width = min(48.0, max(6.0, n_models * (0.25 + 0.06 * len(series))))
    fig, axes = _grid(len(panels), width=width, height=3.4, max_cols=1)
    for ax, domain in zip(axes, panels, strict=False):
        sub = rel[rel["domain"] == domain]
        table = sub.pivot_table(index="model", columns=["calib_set", "method"], values="value", aggfunc="first")
        order = robustness.get(domain, {})
        models = sorted(table.index, key=lambda m: (m in order, order.get(m, 0.0), m))
        table = table.reindex(models)
        width = 0.8 / table.shape[1]
        positions = np.arange(len(models))
        for k, (calib_set, method) in enumerate(table.columns):
            ax.bar(positions + (k - (table.shape[1] - 1) / 2) * width, 100 * table[(calib_set, method)],
                   width=width, color=colors[(calib_set, method)], label=f"{calib_set} ({method})")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(positions, models, rotation=90, fontsize=7)
        ax.set_xlim(-0.5, len(models) - 0.5)
        ax.set_ylabel("relative ECE improvement (%)")
        ordering = "real mIoU (robustness) →" if order else "name (no real mIoU found)"
        ax.set_title(domain)  # short: a long title ran under the legend beside the first panel
        ax.set_xlabel(f"models, ordered by {ordering}", fontsize=8)
    handles = {h.get_label(): h for ax in axes[:len(panels)] for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=7,
               title="calibration set (method)", title_fontsize=7)
    return fig


def ece_improvement_bars(calibration, robustness, domains, out_stem: str | Path) -> list[str]:
    """ece_improvement_figure, saved as PNG and PDF."""
    return save_figure(ece_improvement_figure(calibration, robustness, domains), out_stem)


def class_heatmap(layout: pd.DataFrame, title: str, out_stem: str | Path) -> list[str]:
    """Table 5 as a heat map: classes x shifts, annotated with the coefficient."""
    values = layout.to_numpy(dtype=np.float64)
    fig = Figure(figsize=(1.1 * layout.shape[1] + 2.5, 0.32 * layout.shape[0] + 1.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(layout.shape[1]), layout.columns)
    ax.set_yticks(range(layout.shape[0]), layout.index, fontsize=8)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, format_cell(float(v)), ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="PCC")
    ax.set_title(title)
    return save_figure(fig, out_stem)


def ablation_plot(ablation: pd.DataFrame, out_stem: str | Path) -> list[str]:
    """ablation_figure, saved as PNG and PDF."""
    return save_figure(ablation_figure(ablation), out_stem)


def ablation_figure(ablation: pd.DataFrame) -> Figure:
    """PCC vs number of synthetic images: mean ± std over the seeded repeats, one line per set (distinct
    colours, legend beside the axes)."""
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.subplots()
    groups = list(ablation.groupby(["generator", "domain"], sort=True))
    for ((generator, domain), sub), color in zip(groups, series_colors(len(groups)), strict=True):
        summary = sub.groupby("size")["pearson"].agg(["mean", "std"]).fillna(0.0)
        ax.errorbar(summary.index, summary["mean"], yerr=summary["std"], marker="o", capsize=3, color=color,
                    label=f"{generator} / {domain}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of synthetic images")
    ax.set_ylabel("PCC with real mIoU")
    repeats = int(ablation["repeat"].max()) + 1
    ax.set_title(f"Data-size ablation ({repeats} repeats, seed {ablation['seed'].iloc[0]})")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=7)
    return fig
