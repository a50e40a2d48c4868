import json
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
from analysis_zoo import make_zoo, write_zoo
from hydra.errors import InstantiationException

from synthrel.analysis.report import TINY_NOTICE
from synthrel.errors import ConfigError
from synthrel.stages import build_job


def _stages(cfg):
    return {name: build_job(cfg, name) for name in ("correlate", "report")}


def _calibration(zoo, root: Path):
    rows = []
    for i, model in enumerate(sorted(zoo["model"].unique())):
        for domain in ("fog", "night"):
            raw, ts = 0.2, 0.2 - 0.02 * (i - 1)
            rows += [{"model": model, "domain": domain, "calib_set": "synthetic", "method": "ts", "metric": m,
                      "value": v, "profile": "tiny"}
                     for m, v in (("ece_raw", raw), ("ece_ts", ts), ("ece_rel_improvement", (raw - ts) / raw))]
    table = pd.DataFrame(rows)
    (root / "m").mkdir(parents=True)
    table.to_parquet(root / "m" / "calibration.parquet")
    return table


def as_test_splits(zoo):
    """The zoo's real rows under the relis test-split names the default `real_split=test` reports."""
    real = zoo["generator"].eq("real")
    return zoo.assign(dataset=zoo["dataset"].where(~real, zoo["dataset"] + "_test"))


def test_correlate_and_report_from_composed_config(compose_cfg, tmp_path):
    zoo = as_test_splits(make_zoo(n_models=5, domains=("fog", "night")))
    root = write_zoo(zoo, tmp_path / "artifacts" / "results" / "tiny")
    calib = _calibration(zoo, tmp_path / "artifacts" / "calibration")
    rng = np.random.default_rng(0)
    for model in zoo["model"].unique():  # per-image confusions for the data-size ablation (fog only)
        np.save(root / model / "synthetic_sd15_fog" / "per_image_confusion.npy", rng.integers(0, 50, (6, 19, 19)))
    cfg = compose_cfg("+stage=[correlate,report]", "profile=tiny", "task_name=correlation",
                      f"stages.correlate.results_root={root}", f"stages.correlate.calibration_root={calib_root(tmp_path)}",
                      "stages.correlate.domains=[fog,night]", "stages.correlate.metrics=[mIoU]",
                      "stages.correlate.generators=[sd15]", "stages.correlate.bootstrap.n_resamples=100",
                      "stages.correlate.class_metrics=[]", "stages.correlate.ablation.sizes=[2,4,8]",
                      "stages.correlate.ablation.repeats=3", "stages.correlate.ablation.generators=[sd15]")
    stages = _stages(cfg)
    summary = stages["correlate"].run()
    out = Path(summary["analysis_dir"])
    assert out == Path(cfg.paths.artifacts_dir) / "analysis" / "correlation"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["bootstrap"]["seed"] == cfg.seed and settings["bootstrap"]["n_resamples"] == 100
    assert {"packages", "git_sha"} <= set(settings)
    table1 = pd.read_csv(out / "table1_mIoU.csv", index_col=0)
    assert list(table1.index) == ["sd15"] and list(table1.columns) == ["fog", "night"]
    success = pd.read_csv(out / "table3_calibration_success.csv", index_col=0)
    n_improved = sum(0.02 * (i - 1) > 0 for i in range(5))  # ECE_TS < ECE_raw for models 2, 3, 4
    assert success.loc["synthetic (ts)", "fog"] == pytest.approx(100 * n_improved / 5)
    assert (out / "fig6_ece_improvement.png").exists()
    assert not calib.empty
    ablation = pd.read_csv(out / "ablation_data_size.csv")  # night has no per-image files: skipped with a warning
    assert set(ablation["domain"]) == {"fog"} and sorted(ablation["size"].unique()) == [2, 4]
    assert (out / "fig_ablation_data_size.pdf").exists()

    report = Path(stages["report"].run()["report"])
    lines = report.read_text().splitlines()
    assert lines[0] == TINY_NOTICE
    # the first screen: what ran, on which profile, the headline table; the warnings grouped by cause below
    first_screen = "\n".join(lines[:25])
    assert lines[4] == "## Summary" and "**Run**: analysis `correlation` on the `tiny` profile: 5 zoo model(s)" \
        in first_screen and "shifts fog, night" in first_screen
    assert "**Headline**" in first_screen and "| sd15 " in first_screen
    assert "**Warnings**: Data-size ablation (" in first_screen
    text = report.read_text()
    assert text.index("## Summary") < text.index("## Tables") < text.index("## Warnings") < text.index("## Data")
    assert "### Data-size ablation (" in text and "size(s) [8] exceed the 6 image(s) of the synthetic set" in text
    assert "![" in report.read_text() and "Table 1 layout" in report.read_text()
    # one protocol box, right after the summary, naming the real split
    box = [line for line in lines if line.startswith(">")]
    assert box[0] == "> **Protocol**" and lines.index(box[0]) < lines.index("## Tables")
    assert any("**Real data**: each real set's relis test split" in b and "cityscapes_test" in b for b in box)
    assert any("**Calibration data**" in b and "cityscapes_calib" in b for b in box)
    assert any("**OOD conventions**" in b for b in box)
    html = report.with_suffix(".html").read_text()
    assert TINY_NOTICE.replace("'", "&#39;") in html and "<img src=" in html and "<table" in html
    # the CSV logger of the default `logger=csv` got the metrics
    metrics = next(Path(cfg.paths.output_dir).rglob("metrics.csv")).read_text()
    assert "correlate/mIoU/sd15/fog/pearson" in metrics


def calib_root(tmp_path):
    return tmp_path / "artifacts" / "calibration"


def test_profile_mismatch_and_missing_inputs_are_config_errors(compose_cfg, tmp_path):
    root = write_zoo(make_zoo(n_models=3, domains=("fog",)), tmp_path / "r")
    cfg = compose_cfg("+stage=[correlate]", f"stages.correlate.results_root={root}", "logger=none")
    with pytest.raises(ConfigError, match="profile=tiny"):
        hydra.utils.instantiate(cfg.stages.correlate, _convert_="all").load()
    cfg = compose_cfg("+stage=[correlate]", "stages.correlate.results_root=null", "logger=none")
    with pytest.raises(InstantiationException, match="results_root"):
        hydra.utils.instantiate(cfg.stages.correlate, _convert_="all")


def test_report_on_paper_profile_has_no_tiny_notice(tmp_path):
    from synthrel.analysis.report import ReportJob

    (tmp_path / "t.md").write_text("| a |\n|---|\n| 1 |\n")
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "outputs.json").write_text(json.dumps(
        [{"kind": "table", "title": "T", "csv": str(tmp_path / "t.csv"), "md": str(tmp_path / "t.md"),
          "tex": str(tmp_path / "t.tex")}]))
    report = Path(ReportJob(analysis_dir=str(tmp_path), profile="paper", title="X").run()["report"])
    assert report.read_text().splitlines()[0] == "# X"


def test_the_cityscapes_row_and_the_protocol_box_follow_real_split(compose_cfg, tmp_path):
    """A results root holding Cityscapes in both splits: the Cityscapes row of Table 1 is the one `real_split`
    reports (independent reference: Pearson r of the chosen rows with scipy), the other is left out with a note."""
    from scipy import stats

    whole = make_zoo(n_models=6, domains=("fog",))
    test = as_test_splits(whole)
    test = test.assign(value=test["value"].where(test["dataset"] != "cityscapes_test",
                                                 test["value"] ** 2))  # another Cityscapes value per model
    both = pd.concat([test, whole[whole["generator"] == "real"]], ignore_index=True)  # real sets in both splits
    root = write_zoo(both, tmp_path / "r")
    for split, real, baseline in (("test", "acdc_fog_test", "cityscapes_test"), ("all", "acdc_fog", "cityscapes")):
        cfg = compose_cfg("+stage=[correlate,report]", "profile=tiny", f"real_split={split}", "logger=none",
                          f"task_name=t_{split}", f"stages.correlate.results_root={root}",
                          "stages.correlate.domains=[fog]", "stages.correlate.metrics=[mIoU]",
                          "stages.correlate.bootstrap.n_resamples=50", "stages.correlate.class_metrics=[]",
                          "stages.correlate.ablation.sizes=[]", "stages.correlate.generators=[cityscapes]")
        stages = _stages(cfg)
        out = Path(stages["correlate"].run()["analysis_dir"])
        miou = both[(both["metric"] == "mIoU") & (both["cls"] == "")]
        x = miou[miou["dataset"] == baseline].set_index("model")["value"]
        y = miou[miou["dataset"] == real].set_index("model")["value"].loc[x.index]
        table1 = pd.read_csv(out / "table1_mIoU.csv", index_col=0)
        assert table1.loc["cityscapes", "fog"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
        other = {"cityscapes", "cityscapes_test"} - {baseline}
        notes = json.loads((out / "settings.json").read_text())["warnings"]
        assert any(f"Cityscapes results of {sorted(other)} left out" in n for n in notes)
        text = Path(stages["report"].run()["report"]).read_text()
        assert ("real_split=all, a deviation" in text) == (split == "all")


def test_a_protocol_box_with_an_unknown_split_is_refused(tmp_path):
    from synthrel.analysis.report import ReportJob

    (tmp_path / "outputs.json").write_text("[]")
    with pytest.raises(ConfigError, match="stages.report.real_split is 'calib'"):
        ReportJob(analysis_dir=str(tmp_path), real_split="calib").run()
