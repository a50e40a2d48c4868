"""Calibration summaries (Table 3 / Fig. 6): how often and how much temperature scaling lowers ECE.

"Success" is ECE_TS < ECE_raw for a model (paper_spec 3.3: the paper's 72.5 % for India = 29/40 models);
the relative improvement is (ECE_raw - ECE_TS) / ECE_raw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthrel.analysis.correlation import order_domains

CALIBRATION_COLUMNS = ("model", "domain", "metric", "value", "calib_set", "method", "profile")
KEYS = ["model", "domain", "calib_set", "method"]


def calibration_success(calibration: pd.DataFrame) -> pd.DataFrame:
    """Per (calib_set, method, domain): models, success rate and mean relative ECE improvement (fractions)."""
    wide = calibration.pivot_table(index=KEYS, columns="metric", values="value", aggfunc="first").reset_index()
    if {"ece_raw", "ece_ts"} <= set(wide.columns):
        improved = wide["ece_ts"] < wide["ece_raw"]
        relative = (wide["ece_raw"] - wide["ece_ts"]) / wide["ece_raw"]
        if "ece_rel_improvement" in wide.columns:
            relative = wide["ece_rel_improvement"].fillna(relative)
    elif "ece_rel_improvement" in wide.columns:
        relative = wide["ece_rel_improvement"]
        improved = relative > 0
    else:
        raise ValueError("calibration table needs ece_raw and ece_ts (or ece_rel_improvement) rows")
    wide = wide.assign(improved=improved.astype(float).where(relative.notna()), relative=relative)
    summary = wide.groupby(["calib_set", "method", "domain"], sort=True).agg(
        n_models=("model", "nunique"), success_rate=("improved", "mean"), mean_rel_improvement=("relative", "mean")
    )
    return summary.reset_index()


def success_layout(summary: pd.DataFrame, value: str = "success_rate") -> pd.DataFrame:
    """Table 3 layout: rows = calibration set (method), columns = shifts, cells in %."""
    table = summary.assign(row=summary["calib_set"] + " (" + summary["method"] + ")").pivot(
        index="row", columns="domain", values=value
    )
    table = 100 * table.reindex(columns=order_domains(table.columns)).astype(np.float64)
    table.index.name = "calibration set"
    table.columns.name = None
    return table
