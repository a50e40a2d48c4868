"""Calibration tables (Table 3 / Fig. 6) of the success rate of synthrel.calibration.summary, per domain."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthrel.analysis.correlation import order_domains
from synthrel.calibration.summary import success_summary

CALIBRATION_COLUMNS = ("model", "domain", "metric", "value", "calib_set", "method", "profile")


def calibration_success(calibration: pd.DataFrame) -> pd.DataFrame:
    """Per (calib_set, method, domain): models, success rate and mean relative ECE improvement (fractions)."""
    return success_summary(calibration, by=("calib_set", "method", "domain"))


def success_layout(summary: pd.DataFrame, value: str = "success_rate") -> pd.DataFrame:
    """Table 3 layout: rows = calibration set (method), columns = shifts, cells in %."""
    table = summary.assign(row=summary["calib_set"] + " (" + summary["method"] + ")").pivot(
        index="row", columns="domain", values=value
    )
    table = 100 * table.reindex(columns=order_domains(table.columns)).astype(np.float64)
    table.index.name = "calibration set"
    table.columns.name = None
    return table
