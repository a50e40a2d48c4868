"""Table 2's PCC: the curated and the automatic OOD-object sets against the real OOD set, in both conventions."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_zoo import write_zoo
from scipy import stats

from synthrel.analysis.jobs import CorrelateJob

SETS = {"ood_objects_curated": "ood_objects_curated_sd15_paper42", "ood_objects": "ood_objects_sd15_paper42"}
METRICS = ("auroc_msp", "fpr95_msp", "img_auroc_msp", "img_fpr95_msp", "auroc_entropy", "img_auroc_entropy")


def ood_zoo(n_models=8, seed=0):
    rng = np.random.default_rng(seed)
    skill = rng.uniform(0.5, 0.95, n_models)
    rows = []
    for m in range(n_models):
        model = f"fam{m % 3}-m{m}"
        sets = [("road_anomaly", "road_anomaly", "real", 0.0)] + [(d, key, "sd15", noise)
                                                                  for (d, key), noise in zip(SETS.items(), (0.02, 0.1), strict=True)]
        for domain, dataset, generator, noise in sets:
            for metric in METRICS:
                rows.append({"model": model, "family": model.split("-")[0], "dataset": dataset, "domain": domain,
                             "generator": generator, "metric": metric, "cls": "", "n_images": 4, "profile": "tiny",
                             "value": skill[m] + rng.normal(0, noise + 0.01)})
    return pd.DataFrame(rows)


def test_table2_pcc_names_the_set_and_the_convention_of_each_value(tmp_path):
    zoo = ood_zoo()
    root = write_zoo(zoo, tmp_path / "results")
    job = CorrelateJob(output_dir=str(tmp_path / "out"), results_root=str(root), metrics=list(METRICS),
                       class_metrics=[], domains=list(SETS), generators=["sd15"], profile="tiny",
                       real_datasets={d: "road_anomaly" for d in SETS}, bootstrap={"n_resamples": 20},
                       ablation={"sizes": []})
    out = Path(job.run()["analysis_dir"])
    table = pd.read_csv(out / "table2_pcc_sd15.csv", index_col=0)
    assert list(table.columns) == ["curated", "automatic (all accepted)"]
    expected_rows = sorted(f"{m} ({'genval_per_image' if m.startswith('img_') else 'rba_pooled'})" for m in METRICS)
    assert sorted(table.index) == expected_rows
    for metric in METRICS:
        real = zoo[(zoo["dataset"] == "road_anomaly") & (zoo["metric"] == metric)].set_index("model")["value"]
        convention = "genval_per_image" if metric.startswith("img_") else "rba_pooled"
        for column, key in zip(table.columns, SETS.values(), strict=True):
            synth = zoo[(zoo["dataset"] == key) & (zoo["metric"] == metric)].set_index("model")["value"]
            reference = stats.pearsonr(synth.loc[real.index], real)[0]
            assert table.loc[f"{metric} ({convention})", column] == pytest.approx(reference, abs=1e-12)
    caption = (out / "table2_pcc_sd15.tex").read_text()
    assert "curated items" in caption and "automatic" in caption and "road" in caption.lower()
    assert "rba\\_pooled" in caption and "genval\\_per\\_image" in caption
