import numpy as np
import pandas as pd
import pytest
from analysis_zoo import make_zoo, write_zoo
from scipy import stats
from sklearn.metrics import confusion_matrix, jaccard_score

from synthrel.analysis import ablation, figures
from synthrel.analysis.correlation import Bootstrap, class_layout, correlation_table
from synthrel.errors import DatasetError
from synthrel.metrics.segmentation import mean_iou

N_CLASSES = 19


def _per_image(rng, n_images, quality):
    """Random label/prediction maps and their per-image confusion matrices (sklearn as the reference)."""
    labels, preds, confusions = [], [], []
    for _ in range(n_images):
        y = rng.integers(0, N_CLASSES, 200)
        p = np.where(rng.random(200) < quality, y, rng.integers(0, N_CLASSES, 200))
        labels.append(y)
        preds.append(p)
        confusions.append(confusion_matrix(y, p, labels=range(N_CLASSES)))
    return labels, preds, np.stack(confusions)


def _miou_sklearn(labels, preds):
    y, p = np.concatenate(labels), np.concatenate(preds)
    present = np.union1d(y, p)
    return jaccard_score(y, p, labels=present, average="macro")


def test_ablation_miou_of_a_stack_of_subsets_matches_sklearn():
    """The ablation pools subsets into a stack (..., C, C) and takes the one mIoU of synthrel.metrics over it."""
    labels, preds, conf = _per_image(np.random.default_rng(0), 5, 0.6)
    assert mean_iou(conf.sum(0)) == pytest.approx(_miou_sklearn(labels, preds))
    subsets = [[0, 1], [2, 3, 4], [1, 3]]
    stacked = mean_iou(np.stack([conf[s].sum(0) for s in subsets]))
    expected = [_miou_sklearn([labels[i] for i in s], [preds[i] for i in s]) for s in subsets]
    assert stacked.shape == (3,) and stacked == pytest.approx(expected)


def test_ablation_full_size_equals_full_set_pcc_and_is_seeded():
    rng = np.random.default_rng(1)
    qualities = np.linspace(0.3, 0.9, 5)
    data = {f"m{i}": _per_image(rng, 12, q) for i, q in enumerate(qualities)}
    real = {m: q + rng.normal(0, 0.05) for m, q in zip(data, qualities, strict=True)}
    confusions = {m: d[2] for m, d in data.items()}
    notes = []
    table = ablation.data_size_ablation(confusions, real, sizes=[4, 12, 50], repeats=3, seed=5, notes=notes,
                                        what="sd15->fog")
    assert sorted(table["size"].unique()) == [4, 12]  # 50 > 12 images: skipped, and the report says so
    assert notes == ["data-size ablation sd15->fog: size(s) [50] exceed the 12 image(s) of the synthetic set and "
                     "were skipped"]
    ablation.data_size_ablation(confusions, real, sizes=[16, 32], repeats=3, seed=5, notes=notes, what="sd15->fog")
    assert notes[-1].endswith("no size fits, so no ablation table or figure")
    full = [_miou_sklearn(data[m][0], data[m][1]) for m in sorted(data)]
    expected = stats.pearsonr(full, [real[m] for m in sorted(data)]).statistic
    np.testing.assert_allclose(table.loc[table["size"] == 12, "pearson"], expected)
    again = ablation.data_size_ablation(confusions, real, sizes=[4], repeats=3, seed=5)
    other = ablation.data_size_ablation(confusions, real, sizes=[4], repeats=3, seed=6)
    np.testing.assert_array_equal(again["pearson"], table.loc[table["size"] == 4, "pearson"])
    assert not np.array_equal(other["pearson"], again["pearson"])


def test_ablation_without_confusion_files_says_what_is_missing(tmp_path):
    root = write_zoo(make_zoo(n_models=3, domains=("fog",)), tmp_path / "results")
    from synthrel.analysis.aggregate import load_results

    with pytest.raises(DatasetError, match="per_image_confusion.npy"):
        ablation.ablation_for(load_results(root), "sd15", "fog", [2], 2, 0)


def _assert_figure(paths):
    assert {p.rsplit(".", 1)[1] for p in paths} == {"png", "pdf"}
    for p in paths:
        assert (size := __import__("os").path.getsize(p)) > 5000, (p, size)


def test_every_figure_is_written(tmp_path):
    zoo = make_zoo(n_models=5, domains=("fog", "night"))
    _assert_figure(figures.scatter_synthetic_vs_real(zoo, "mIoU", "sd15", ["fog", "night"], tmp_path / "scatter"))

    tidy = correlation_table(zoo, ["IoU"], ["fog", "night"], ["sd15"], per_class=True, bootstrap=Bootstrap(0))
    _assert_figure(figures.class_heatmap(class_layout(tidy, "IoU", "sd15"), "per-class", tmp_path / "heat"))

    models = sorted(zoo["model"].unique())
    calib = pd.DataFrame([{"model": m, "domain": d, "calib_set": s, "method": "ts", "metric": "ece_rel_improvement",
                           "value": v, "profile": "tiny"}
                          for i, m in enumerate(models) for d in ("fog", "night")
                          for s, v in (("synthetic", 0.1 * i), ("cityscapes", -0.05 * i))])
    robustness = {"fog": {m: i / 10 for i, m in enumerate(models)}}
    _assert_figure(figures.ece_improvement_bars(calib, robustness, ["fog", "night"], tmp_path / "bars"))

    runs = pd.DataFrame([{"generator": "sd15", "domain": "fog", "size": k, "repeat": r, "pearson": 0.5 + 0.01 * k + r,
                          "n_models": 5, "seed": 0} for k in (4, 8, 16) for r in range(3)])
    _assert_figure(figures.ablation_plot(runs, tmp_path / "ablation"))
