"""The calibration success rate (Table 3 / Fig. 6): how often and how much temperature scaling lowers ECE.

"Success" is ECE_TS < ECE_raw for a model (paper_spec 3.3: the paper's 72.5 % for India = 29/40 models); the
relative improvement is (ECE_raw - ECE_TS) / ECE_raw. The calibrate stage summarises per target dataset and
the analysis per domain, both with `success_summary`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

SUCCESS_COLUMNS = ["n_models", "success_rate", "mean_rel_improvement"]


def success_summary(table: pd.DataFrame, by: Sequence[str] = ("calib_set", "method", "dataset")) -> pd.DataFrame:
    """Per group of `by` (long rows: model, metric, value, ...): the number of models with a value, the success
    rate (fraction of models with ECE_TS < ECE_raw) and the mean relative improvement. A model without a relative
    improvement (no ECE_raw/ECE_TS pair, or ECE_raw = 0) counts in neither; `domain`, when present and not a
    key, is carried along (its first value per group)."""
    by = list(by)
    extra = ["domain"] if "domain" in table.columns and "domain" not in by else []
    columns = by + extra + SUCCESS_COLUMNS
    if table.empty:
        return pd.DataFrame(columns=columns)
    keys = by + ["model"]
    wide = table.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
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
    if extra:
        wide = wide.merge(table.drop_duplicates(keys)[keys + extra], on=keys, how="left")
    summary = wide.groupby(by, sort=True, dropna=False).agg(
        **{c: (c, "first") for c in extra}, n_models=("model", "nunique"), success_rate=("improved", "mean"),
        mean_rel_improvement=("relative", "mean"),
    ).reset_index()
    return summary[columns]
