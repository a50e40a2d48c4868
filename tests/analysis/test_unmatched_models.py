"""Correlation never drops a row silently (issue #24 item 6): synthetic results whose model names do not match
the real results' zoo show as n/a in Table 1, with a warning naming the missing models, through the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from analysis_zoo import make_zoo, write_zoo
from scipy import stats

REPO = Path(__file__).resolve().parents[2]


def test_unmatched_model_names_show_as_na_with_a_warning(tmp_path):
    zoo = make_zoo(n_models=5, domains=("fog", "night"))
    fog_sd15 = (zoo["generator"] == "sd15") & (zoo["domain"] == "fog")
    zoo.loc[fog_sd15, "model"] = zoo.loc[fog_sd15, "model"].str.replace("fam", "renamed")  # another zoo's names
    fog_sdxl = (zoo["generator"] == "sdxl") & (zoo["domain"] == "fog")
    kept = sorted(zoo.loc[fog_sdxl, "model"].unique())[:2]  # only 2 models in common with the real results
    zoo = zoo[~fog_sdxl | zoo["model"].isin(kept)]
    root = write_zoo(zoo, tmp_path / "artifacts" / "results" / "tiny")
    proc = subprocess.run(
        [sys.executable, "-m", "synthrel.run", "+stage=[correlate,report]", "profile=tiny", "task_name=corr",
         "real_split=all",  # the helper zoo holds the whole real sets
         f"paths.root_dir={tmp_path}", f"paths.artifacts_dir={tmp_path}/artifacts", f"paths.log_dir={tmp_path}/logs",
         f"stages.correlate.results_root={root}", "stages.correlate.domains=[fog,night]",
         "stages.correlate.metrics=[mIoU]", "stages.correlate.class_metrics=[]", "stages.correlate.ablation.sizes=[]",
         "stages.correlate.bootstrap.n_resamples=50", "stages.correlate.calibration_root=null", "preflight=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "artifacts" / "analysis" / "corr"
    table = pd.read_csv(out / "table1_mIoU.csv", index_col=0)
    assert list(table.index) == ["sd15", "sdxl", "cityscapes"]  # no row vanished
    assert pd.isna(table.loc["sd15", "fog"]) and pd.isna(table.loc["sdxl", "fog"])
    rows = {line.split("|")[1].strip(): line for line in (out / "table1_mIoU.md").read_text().splitlines()
            if line.startswith("|")}
    assert [cell.strip() for cell in rows["sd15"].split("|")[2:4]][0] == "n/a", rows
    assert [cell.strip() for cell in rows["sdxl"].split("|")[2:4]][0] == "n/a", rows
    # the matching cells are still the plain Pearson r over the 5 models
    night = zoo[(zoo["metric"] == "mIoU") & (zoo["domain"] == "night")]
    x = night[night["generator"] == "sd15"].set_index("model")["value"]
    y = night[night["dataset"] == "acdc_night"].set_index("model")["value"]
    assert float(table.loc["sd15", "night"]) == pytest.approx(stats.pearsonr(x, y.loc[x.index])[0], abs=0.006)
    logs = proc.stdout + proc.stderr
    renamed = sorted(zoo.loc[fog_sd15, "model"].unique())
    expected = (f"correlation mIoU sd15->fog: 0 model(s) in common with the real results on 'acdc_fog'; fewer "
                f"than 3, shown as n/a; without a real result: {', '.join(renamed)}")
    assert expected in logs
    missing_sdxl = sorted(set(y.index) - set(kept))
    assert "sdxl->fog: 2 model(s) in common" in logs and f"without a sdxl result: {', '.join(missing_sdxl)}" in logs
    warnings = json.loads((out / "settings.json").read_text())["warnings"]
    assert any(w.startswith(expected) for w in warnings) and len(warnings) == 2
    assert expected in (out / "report.md").read_text()


def test_a_per_class_na_cell_names_its_class_and_the_real_reason():
    """Every model evaluated on both sets, but the class has no IoU (NaN: no pixel of it in the labels nor the
    predictions) on the synthetic set: the warning names the cell (metric, class, generator, domain) and says so,
    instead of "0 model(s) in common ... check that both were evaluated with the same zoo"."""
    from synthrel.analysis.correlation import Bootstrap, correlation_table

    rows = []
    for k, model in enumerate(["m1", "m2", "m3", "m4"]):
        for dataset, generator in (("synthetic_sd15_fog", "sd15"), ("acdc_fog", "real")):
            for cls in ("road", "train"):
                value = float("nan") if (cls, generator) == ("train", "sd15") else 0.1 * k + 0.05 * (cls == "road")
                rows.append({"model": model, "family": "f", "dataset": dataset, "domain": "fog",
                             "generator": generator, "metric": "IoU", "cls": cls, "value": value, "n_images": 4,
                             "profile": "tiny"})
    notes = []
    tidy = correlation_table(pd.DataFrame(rows), ["IoU"], domains=["fog"], per_class=True,
                             bootstrap=Bootstrap(n_resamples=10), notes=notes)
    assert tidy.set_index("cls")["pearson"].isna().to_dict() == {"road": False, "train": True}
    assert notes == ["correlation IoU[train] sd15->fog: 0 model(s) with a value on both sides, fewer than 3, shown "
                     "as n/a: every model was evaluated on both sets, but IoU is undefined (the class has no pixel "
                     "in the labels nor in the predictions, or the set has no such class) for 4 of 4 on 'sd15', "
                     "0 of 4 on 'acdc_fog'"]
