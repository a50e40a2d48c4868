"""One ECE definition per table (stated in its caption), one way to print a missing value, correlations from too
few informative models as n/a, and figures that stay legible with 40 models and 20 series."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_zoo import make_zoo, write_zoo
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from scipy import stats

from synthrel.analysis import correlation, figures
from synthrel.analysis.jobs import CorrelateJob
from synthrel.analysis.report import ReportJob
from synthrel.metrics.calibration import ECE_DEFINITIONS
from synthrel.reporting import MISSING, NA_FOOTNOTE, save_table


def test_a_class_that_one_model_segments_is_na_not_a_perfect_correlation():
    x, y = np.array([0.0, 0.0, 0.0, 0.3]), np.array([0.0, 0.0, 0.0, 0.2])
    assert stats.pearsonr(x, y).statistic == pytest.approx(1.0)  # the trap: two distinct points
    out = correlation.correlate(x, y, correlation.Bootstrap(n_resamples=50))
    assert out["n_informative"] == 2 and np.isnan(out["pearson"]) and np.isnan(out["pearson_lo"])
    x3, y3 = np.array([0.0, 0.0, 0.1, 0.3]), np.array([0.0, 0.0, 0.3, 0.2])
    out = correlation.correlate(x3, y3, correlation.Bootstrap(n_resamples=200))
    assert out["n_informative"] == 3
    assert out["pearson"] == pytest.approx(stats.pearsonr(x3, y3).statistic)
    assert out["spearman"] == pytest.approx(stats.spearmanr(x3, y3).statistic)


def test_missing_values_print_as_na_with_a_footnote_in_every_format(tmp_path):
    table = pd.DataFrame({"fog": [0.8512, np.nan], "night": [0.1, 0.25]},
                         index=pd.Index(["sd15", "corruption:fog_s3"], name="generator"))
    paths = save_table(table, tmp_path, "t", caption="Table 3 layout: % of models_x")
    md, tex = Path(paths["md"]).read_text(), Path(paths["tex"]).read_text()
    for text in (md, tex):
        assert "nan" not in text.lower().replace("n/a", "") and " - " not in text
    assert "| corruption:fog_s3 |   n/a |    0.25 |" in md and NA_FOOTNOTE in md
    assert r"corruption:fog\_s3 & n/a & 0.25 \\" in tex
    assert r"\caption{Table 3 layout: \% of models\_x n/a: no value." in tex
    assert pd.read_csv(paths["csv"], index_col=0).equals(table)  # the CSV keeps exact values, empty = missing
    complete = save_table(table.fillna(0.5), tmp_path, "u")
    assert MISSING not in Path(complete["md"]).read_text() and NA_FOOTNOTE not in Path(complete["md"]).read_text()


def test_tables_use_the_papers_ece_by_default_and_say_which(tmp_path):
    zoo = make_zoo(n_models=6, domains=("fog",))
    rng = np.random.default_rng(1)
    sampled = zoo[zoo["metric"] == "ece"].assign(metric="ece_paper")
    sampled["value"] = sampled["value"] + rng.normal(0, 0.02, len(sampled))  # a different measurement
    root = write_zoo(pd.concat([zoo, sampled], ignore_index=True), tmp_path / "results")
    job = CorrelateJob(output_dir=str(tmp_path / "out"), results_root=str(root), domains=["fog"],
                       class_metrics=[], generators=["sd15"], bootstrap={"n_resamples": 20}, profile="tiny")
    job.run()
    out = tmp_path / "out"
    assert (out / "table1_ece_paper.csv").exists() and not (out / "table1_ece.csv").exists()
    real = sampled[sampled["dataset"] == "acdc_fog"].set_index("model")["value"]
    synth = sampled[sampled["dataset"] == "synthetic_sd15_fog"].set_index("model")["value"]
    expected = stats.pearsonr(synth.sort_index(), real.sort_index()).statistic
    assert pd.read_csv(out / "table1_ece_paper.csv", index_col=0).loc["sd15", "fog"] == pytest.approx(expected)
    titles = {Path(i["md"]).stem: i["title"] for i in json.loads((out / "outputs.json").read_text())
              if i["kind"] == "table"}
    assert ECE_DEFINITIONS["ece_paper"] in titles["table1_ece_paper"]
    assert "sampled" in (out / "table1_ece_paper.tex").read_text()
    # the all-pixel ECE stays available under its own name, captioned as such
    CorrelateJob(output_dir=str(tmp_path / "all"), results_root=str(root), domains=["fog"], metrics=["ece"],
                 class_metrics=[], generators=["sd15"], bootstrap={"n_resamples": 0}, profile="tiny").run()
    assert "all valid pixels" in (tmp_path / "all" / "table1_ece.tex").read_text()


def test_report_prints_na_the_same_way_in_markdown_and_html(tmp_path):
    zoo = make_zoo(n_models=5, domains=("fog",))
    zoo = zoo[~((zoo["cls"] == "train") & (zoo["dataset"] != "cityscapes"))].copy()
    # "rider": only one model segments it (IoU 0 elsewhere) on both sets -> too few informative models
    rider = zoo["cls"] == "rider"
    zoo.loc[rider, "value"] = np.where(zoo.loc[rider, "model"] == "fam0-m0", 0.4, 0.0)
    root = write_zoo(zoo, tmp_path / "results")
    out = tmp_path / "out"
    CorrelateJob(output_dir=str(out), results_root=str(root), domains=["fog"], metrics=["mIoU"],
                 class_metrics=["IoU"], generators=["sd15"], bootstrap={"n_resamples": 20}, profile="tiny").run()
    table5 = pd.read_csv(out / "table5_IoU_sd15.csv", index_col=0)
    assert np.isnan(table5.loc["rider", "fog"]) and np.isnan(table5.loc["train", "fog"])
    assert table5.drop(["rider", "train"])["fog"].notna().all()
    ReportJob(analysis_dir=str(out), profile="tiny").run()
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "nan" not in md.replace("n/a", "").lower().split("## settings")[0]
    assert "| rider         |   n/a |" in md and "| train         |   n/a |" in md and NA_FOOTNOTE in md
    assert "<td>n/a</td>" in html and "nan" not in html.split("<h2>Settings")[0].replace("n/a", "").lower()


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_fig6_with_40_models_and_20_series_keeps_the_legend_off_the_bars_and_colours_distinct():
    rng = np.random.default_rng(0)
    models = [f"model_{m:02d}" for m in range(40)]
    series = [(f"set{s // 2}", ("global", "per_class")[s % 2]) for s in range(20)]
    rows = [{"model": m, "domain": d, "calib_set": c, "method": meth, "metric": "ece_rel_improvement",
             "value": rng.normal(0.1, 0.2)} for m in models for d in ("fog", "night") for c, meth in series]
    robustness = {"fog": {m: rng.uniform() for m in models}}
    fig = figures.ece_improvement_figure(pd.DataFrame(rows), robustness, ["fog", "night"])
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 and not any(_overlaps(box, ax.get_window_extent(renderer)) for ax in axes)
    assert len(legend.get_texts()) == 20
    for ax in axes:
        colours = {to_hex(c.patches[0].get_facecolor()) for c in ax.containers}
        assert len(colours) == 20
    labels = [t.get_text() for t in axes[0].get_xticklabels()]
    assert labels == sorted(models, key=robustness["fog"].get)  # ordered by robustness


def test_ablation_plot_with_20_series_has_distinct_colours_and_an_outside_legend():
    rows = [{"generator": f"g{g}", "domain": d, "size": s, "repeat": r, "pearson": 0.1 * g, "seed": 0}
            for g in range(10) for d in ("fog", "night") for s in (2, 4) for r in range(2)]
    fig = figures.ablation_figure(pd.DataFrame(rows))
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (legend,) = fig.legends
    assert not _overlaps(legend.get_window_extent(renderer), fig.axes[0].get_window_extent(renderer))
    assert len({to_hex(line.get_color()) for line in fig.axes[0].get_lines() if line.get_marker() == "o"}) == 20


def test_a_measurement_table_has_plain_row_labels_its_own_footnote_and_names_what_it_leaves_out(tmp_path):
    """An OOD layout (rows: model and score): the labels print as two columns, not `('m1', 'msp')`; rows without
    any value (a score that does not apply to a model) are left out and named; rows that repeat another row are
    named; n/a means "not measured" there, not the correlation footnote."""
    from synthrel.reporting import NOT_MEASURED_FOOTNOTE

    rows = pd.MultiIndex.from_tuples([("m1", "msp"), ("m1", "rba"), ("rba_b", "rba"), ("rba_l", "rba"), ("m2", "msp")],
                                     names=["model", "score"])
    table = pd.DataFrame({"fog auroc": [60.0, np.nan, 41.5, 41.5, 70.0], "fog ap": [3.0, np.nan, 1.2, 1.2, np.nan]},
                         index=rows)
    paths = save_table(table, tmp_path, "ood", na_footnote=NOT_MEASURED_FOOTNOTE, drop_empty_rows=True,
                       notes=["rba_b and rba_l load the same checkpoint."])
    md = Path(paths["md"]).read_text()
    assert "(" not in md.split("\n\n")[0] and "| model   | score   |" in md
    assert "| m1      | msp     |" in md and "| m1      | rba" not in md
    assert paths["footnote"] == (f"{NOT_MEASURED_FOOTNOTE} rba_b and rba_l load the same checkpoint. Rows without "
                                 "any value left out: m1 rba. Identical rows (same values in every column): "
                                 "rba_b rba = rba_l rba.")
    assert NA_FOOTNOTE not in md and md.rstrip().endswith(paths["footnote"])
    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns) == ["model", "score", "fog auroc", "fog ap"] and len(csv) == 4
