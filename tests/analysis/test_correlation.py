import numpy as np
import pandas as pd
import pytest
from analysis_zoo import REAL, make_zoo
from scipy import stats

from synthrel.analysis import correlation as corr
from synthrel.conventions import CLASS_NAMES
from synthrel.errors import DatasetError


def _direct(zoo, metric, x_dataset, y_dataset, cls=""):
    """x/y per model, selected straight from the zoo table by dataset name (independent of the library)."""
    sel = zoo[(zoo["metric"] == metric) & (zoo["cls"] == cls)]
    x = sel[sel["dataset"] == x_dataset].set_index("model")["value"]
    y = sel[sel["dataset"] == y_dataset].set_index("model")["value"]
    return x.sort_index().to_numpy(), y.reindex(x.sort_index().index).to_numpy()


def test_vectorised_coefficients_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, (20, 9)).astype(float)  # many ties
    y = x + rng.integers(0, 3, (20, 9))
    for i in range(20):
        assert corr.pearson_along(x[i], y[i]) == pytest.approx(stats.pearsonr(x[i], y[i]).statistic)
        assert corr.spearman_along(x[i], y[i]) == pytest.approx(stats.spearmanr(x[i], y[i]).statistic)
        assert corr.kendall_along(x[i], y[i]) == pytest.approx(stats.kendalltau(x[i], y[i]).statistic)
    assert np.isnan(corr.pearson_along(np.ones(5), np.arange(5.0)))


def test_point_estimates_equal_scipy_on_zoo():
    zoo = make_zoo()
    pairs = corr.paired_values(zoo, "mIoU", "night", "sd15")
    x, y = _direct(zoo, "mIoU", "synthetic_sd15_night", "acdc_night")
    np.testing.assert_allclose(pairs.sort_values("model")["x"], x)
    out = corr.correlate(pairs["x"], pairs["y"], corr.Bootstrap(n_resamples=0))
    assert out["n_models"] == 12
    assert out["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert out["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue)
    assert out["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert out["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic)


def test_bootstrap_interval_equals_scipy_percentile_bootstrap():
    zoo = make_zoo()
    x, y = _direct(zoo, "mIoU", "synthetic_sd15_fog", "acdc_fog")
    out = corr.correlate(x, y, corr.Bootstrap(n_resamples=999, confidence=0.9, seed=3))
    for method, fn in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr)):
        ref = stats.bootstrap((x, y), lambda a, b, fn=fn: fn(a, b).statistic, paired=True, vectorized=False,
                              n_resamples=999, confidence_level=0.9, method="percentile",
                              rng=np.random.default_rng(3)).confidence_interval
        assert (out[f"{method}_lo"], out[f"{method}_hi"]) == pytest.approx((ref.low, ref.high))
    assert out["n_valid_resamples"] == 999


def test_bootstrap_contains_estimate_and_is_seeded():
    zoo = make_zoo()
    x, y = _direct(zoo, "ece", "synthetic_sd15_rain", "acdc_rain")
    a = corr.correlate(x, y, corr.Bootstrap(500, seed=7))
    b = corr.correlate(x, y, corr.Bootstrap(500, seed=7))
    c = corr.correlate(x, y, corr.Bootstrap(500, seed=8))
    for m in corr.METHODS:
        assert a[f"{m}_lo"] <= a[m] <= a[f"{m}_hi"]
        assert (a[f"{m}_lo"], a[f"{m}_hi"]) == (b[f"{m}_lo"], b[f"{m}_hi"])
    assert (a["pearson_lo"], a["pearson_hi"]) != (c["pearson_lo"], c["pearson_hi"])
    assert a["seed"] == 7 and a["n_resamples"] == 500


def test_table1_layout_rows_columns_and_values():
    zoo = make_zoo(n_models=8)
    extra = zoo[zoo["generator"] == "sd15"].assign(generator="corruption:fog", dataset="cs_fog_corruption")
    user = zoo[zoo["generator"] == "sdxl"].assign(generator="my_set", dataset="my_set")
    zoo = pd.concat([zoo, user, extra], ignore_index=True)
    tidy = corr.correlation_table(zoo, ["mIoU"], bootstrap=corr.Bootstrap(50))
    table = corr.shift_layout(tidy, "mIoU")
    assert list(table.index) == ["sd15", "sdxl", "cityscapes", "corruption:fog", "my_set"]
    assert list(table.columns) == ["fog", "night", "rain", "snow", "india"]
    for domain in ("fog", "india"):
        x, y = _direct(zoo, "mIoU", f"synthetic_sdxl_{domain}", REAL[domain])
        assert table.loc["sdxl", domain] == pytest.approx(stats.pearsonr(x, y).statistic)
        x, y = _direct(zoo, "mIoU", "cityscapes", REAL[domain])  # in-domain baseline predicts every shift
        assert table.loc["cityscapes", domain] == pytest.approx(stats.pearsonr(x, y).statistic)
    cells = corr.with_intervals(tidy, corr.shift_layout, metric="mIoU")
    assert cells.loc["sd15", "fog"].startswith(f"{table.loc['sd15', 'fog']:.2f} [")


def test_table5_layout_per_class():
    zoo = make_zoo(n_models=6, domains=("night", "india"))
    tidy = corr.correlation_table(zoo, ["IoU"], ["night", "india"], ["sd15"], per_class=True,
                                  bootstrap=corr.Bootstrap(0))
    table = corr.class_layout(tidy, "IoU", "sd15")
    assert list(table.index) == list(CLASS_NAMES) and list(table.columns) == ["night", "india"]
    x, y = _direct(zoo, "IoU", "synthetic_sd15_night", "acdc_night", cls="car")
    assert table.loc["car", "night"] == pytest.approx(stats.pearsonr(x, y).statistic)


def test_nan_values_drop_models_and_duplicates_raise():
    zoo = make_zoo(n_models=6)
    idx = zoo.index[(zoo["dataset"] == "idd") & (zoo["cls"] == "train")]
    zoo.loc[idx[:2], "value"] = np.nan  # e.g. IoU forced to NaN on IDD
    assert len(corr.paired_values(zoo, "IoU", "india", "sd15", cls="train")) == 4
    dup = pd.concat([zoo, zoo[zoo["dataset"] == "acdc_fog"]], ignore_index=True)
    with pytest.raises(DatasetError, match="several rows"):
        corr.paired_values(dup, "mIoU", "fog", "sd15")
