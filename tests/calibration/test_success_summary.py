"""The one calibration success rate (synthrel.calibration.summary), used by the calibrate stage per dataset and by
the analysis per domain, against a count written here in plain Python."""

import math

import numpy as np
import pandas as pd
import pytest

from synthrel.analysis.calibration import calibration_success
from synthrel.calibration.summary import success_summary


def _table(rng) -> pd.DataFrame:
    rows = []
    for calib_set in ("synthetic", "cityscapes"):
        for dataset, domain in (("acdc_fog_test", "fog"), ("acdc_night_test", "night"), ("idd_test", "india")):
            for m in range(5):
                raw = rng.uniform(0.05, 0.2)
                ts = raw * rng.uniform(0.6, 1.4)
                if (calib_set, dataset, m) == ("synthetic", "idd_test", 0):
                    raw = ts = float("nan")  # a model without a value counts nowhere
                for metric, value in (("ece_raw", raw), ("ece_ts", ts), ("ece_rel_improvement", (raw - ts) / raw)):
                    rows.append({"model": f"m{m}", "calib_set": calib_set, "method": "global", "dataset": dataset,
                                 "domain": domain, "metric": metric, "value": value})
    return pd.DataFrame(rows)


def _reference(table: pd.DataFrame, key: str) -> dict:
    values = {}
    for r in table.itertuples():
        values.setdefault((r.calib_set, r.method, getattr(r, key)), {}).setdefault(r.model, {})[r.metric] = r.value
    out = {}
    for group, models in values.items():
        pairs = [(v["ece_raw"], v["ece_ts"]) for v in models.values() if not math.isnan(v["ece_raw"])]
        out[group] = (len(pairs), sum(ts < raw for raw, ts in pairs) / len(pairs),
                      sum((raw - ts) / raw for raw, ts in pairs) / len(pairs))
    return out


@pytest.mark.parametrize("key", ["dataset", "domain"])
def test_success_rate_per_dataset_and_per_domain(key):
    table = _table(np.random.default_rng(0))
    summary = success_summary(table, by=("calib_set", "method", key))
    expected = _reference(table, key)
    assert len(summary) == len(expected)
    for r in summary.itertuples():
        n, rate, gain = expected[(r.calib_set, r.method, getattr(r, key))]
        assert (r.n_models, r.success_rate, r.mean_rel_improvement) == (n, pytest.approx(rate), pytest.approx(gain))
    assert 0 < summary["success_rate"].min() < summary["success_rate"].max() < 1  # the groups differ


def test_stage_and_analysis_share_it():
    table = _table(np.random.default_rng(1))
    stage = success_summary(table)  # the calibrate stage's default: per target dataset, domain carried along
    assert list(stage.columns) == ["calib_set", "method", "dataset", "domain", "n_models", "success_rate",
                                   "mean_rel_improvement"]
    analysis = calibration_success(table)
    pd.testing.assert_frame_equal(analysis, success_summary(table, by=("calib_set", "method", "domain")))
    assert success_summary(table.iloc[:0]).empty
