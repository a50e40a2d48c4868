"""The forecast stage end to end on the tiny profile: the README command in a subprocess, its numbers against an
independent recomputation from the simulated reference zoo, and forecasting from a published reference table."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import torch
from forecast_world import DOMAINS, build_data, simulated_zoo, write_results
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from scipy import stats
from scipy.special import softmax

from synthrel.errors import ConfigError, DatasetError
from synthrel.forecast.atc import atc_rows
from synthrel.forecast.reference import PROVENANCE_FILE, TABLE_FILE, read_reference, write_reference
from synthrel.run import CONF_DIR, run_stages

REPO = Path(__file__).resolve().parents[2]
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "TQDM_DISABLE": "1",
       "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
MODEL = "ccnet_r18_untrained"  # synthrel/conf/model/tiny_unseen.yaml


def readme_forecast_command() -> list[str]:
    """The tiny-profile forecast command exactly as README.md writes it."""
    lines = [line.strip() for line in (REPO / "README.md").read_text().splitlines()
             if re.match(r"\s*python -m synthrel\.run \+experiment=forecast model=tiny_unseen", line)]
    assert lines, "README.md shows no `python -m synthrel.run +experiment=forecast model=tiny_unseen ...` line"
    return [sys.executable, *shlex.split(lines[0], comments=True)[1:]]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A working folder as after `make demo`: demo data, synthetic sets, the forecast's model and (simulated) zoo
    results."""
    from synthrel.tiny.segmentation import ensure_tiny_segmenter

    root = tmp_path_factory.mktemp("forecast_world")
    build_data(root / "outputs")
    # synthrel/conf/model/tiny_unseen.yaml's folder, as the tiny_models stage writes it (synthrel/conf/stage/tiny_models.yaml)
    ensure_tiny_segmenter("ccnet_r18", root / "outputs" / "tiny" / "models" / "forecast" / "ccnet_r18_untrained")
    write_results(simulated_zoo(), root / "outputs" / "tiny" / "artifacts" / "results" / "tiny")
    return root


@pytest.fixture(scope="module")
def cli_run(world):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHREL_")} | ENV
    proc = subprocess.run(readme_forecast_command(), cwd=world, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return world / "outputs" / "tiny" / "artifacts"


def _expected(zoo: pd.DataFrame, mine: pd.DataFrame, metric: str, domain: str, level: float = 0.9,
              predictor: str | None = None):
    """Forecast, interval and LOO errors recomputed from the raw tables with scipy and brute force; the forecast
    and the intervals clipped to [0, 1] (all metrics here are fractions: docs/forecast.md)."""
    predictor = predictor or f"synthetic_sd15_{domain}"
    cell = zoo[zoo["metric"] == metric]
    x = cell[cell["dataset"] == predictor].set_index("model")["value"].sort_index()
    y = cell[cell["dataset"] == DOMAINS[domain]].set_index("model")["value"].reindex(x.index)
    x0 = mine.loc[(mine["metric"] == metric) & (mine["dataset"] == predictor), "value"].item()

    def interval(xs, ys, at):
        fit = stats.linregress(xs, ys)
        n = len(xs)
        s = np.sqrt(((ys - fit.intercept - fit.slope * xs) ** 2).sum() / (n - 2))
        half = stats.t.ppf(0.5 + level / 2, n - 2) * s * np.sqrt(1 + 1 / n + (at - xs.mean()) ** 2 /
                                                               ((xs - xs.mean()) ** 2).sum())
        y0 = fit.intercept + fit.slope * at
        return tuple(np.clip([y0, y0 - half, y0 + half], 0, 1))

    x, y = x.to_numpy(), y.to_numpy()
    loo = [interval(np.delete(x, i), np.delete(y, i), x[i]) for i in range(len(x))]
    errors = [abs(p - yi) for (p, _, _), yi in zip(loo, y, strict=True)]
    covered = [lo <= yi <= hi for (_, lo, hi), yi in zip(loo, y, strict=True)]
    return (*interval(x, y, x0), x0, np.mean(errors), np.mean(covered))


@pytest.mark.slow  # ~20 s: a subprocess that imports torch and mmseg, evaluates 11 sets and draws 3 figures
def test_readme_command_forecasts_an_unseen_model_and_a_published_reference_repeats_it(cli_run, world, tmp_path):
    """One test (the CLI run is the costly part, so that xdist workers never run it twice)."""
    forecast = pd.read_csv(cli_run / "analysis" / "forecast" / "forecast.csv")
    zoo = simulated_zoo()
    mine = pd.concat(pd.read_parquet(p) for p in (cli_run / "results" / "forecast" / MODEL).rglob("metrics.parquet"))
    assert set(forecast["model"]) == {MODEL}
    assert len(forecast) == 2 * len(DOMAINS)  # mIoU and ECE per domain; no OOD metric in the simulated zoo
    table_md = (cli_run / "analysis" / "forecast" / "forecast_table.md").read_text()
    for pattern in ("auroc_*", "ap_*", "fpr95_*"):  # the configured rows that are missing say why under the table
        assert f"No {pattern} rows: no result of the reference zoo has this metric (OOD metrics come from " \
               "evaluating the zoo on an OOD set: road_anomaly, ood_objects)." in table_md
    for _, row in forecast.iterrows():
        predicted, lo, hi, x0, mae, coverage = _expected(zoo, mine, row["metric"], row["domain"])
        np.testing.assert_allclose([row["predicted"], row["lo"], row["hi"], row["synthetic"]], [predicted, lo, hi, x0],
                                   rtol=1e-9)
        np.testing.assert_allclose([row["loo_mae"], row["loo_coverage"]], [mae, coverage], rtol=1e-9)
        measured = mine.loc[(mine["metric"] == row["metric"]) & (mine["dataset"] == row["real_dataset"]), "value"]
        assert row["actual"] == pytest.approx(measured.item())  # the demo data has the real sets: checked too
    # every predictor's forecast and LOO validation (#39); clean Cityscapes val is uninformative in this zoo
    comparison = pd.read_csv(cli_run / "analysis" / "forecast" / "forecast_predictors.csv")
    assert set(comparison["predictor"]) == {"sd15", "cityscapes (clean)", "sd15 + cityscapes (clean)"}
    for _, row in comparison[comparison["predictor"] == "cityscapes (clean)"].iterrows():
        predicted, lo, hi, x0, mae, coverage = _expected(zoo, mine, row["metric"], row["domain"],
                                                         predictor="cityscapes_test")
        np.testing.assert_allclose([row["predicted"], row["lo"], row["hi"], row["x"], row["loo_mae"],
                                    row["loo_coverage"]], [predicted, lo, hi, x0, mae, coverage], rtol=1e-9)
    # ATC's estimates from the evaluate stage's real output folders (Cityscapes val -> each labeled real set)
    results = cli_run / "results" / "forecast" / MODEL
    atc = atc_rows(results).set_index("dataset")["value"]
    assert set(DOMAINS.values()) <= set(atc.index)
    with np.load(results / "cityscapes_test" / "calib_sample.npz") as source, \
            np.load(results / DOMAINS["fog"] / "calib_sample.npz") as target:
        conf = softmax(source["logits"].astype(np.float64), axis=1).max(axis=1)
        k = int((source["logits"].argmax(axis=1) == source["labels"]).sum())
        t = -np.inf if k == len(conf) else np.sort(conf)[len(conf) - k - 1]  # k above t (without ties)
        assert atc[DOMAINS["fog"]] == pytest.approx(np.mean(softmax(target["logits"].astype(np.float64), axis=1)
                                                        .max(axis=1) > t), abs=1e-12)
    synthetic = comparison[comparison["predictor"] == "sd15"].set_index(["metric", "domain"])
    clean = comparison[comparison["predictor"] == "cityscapes (clean)"].set_index(["metric", "domain"])
    assert (synthetic["loo_mae"] < clean["loo_mae"]).all()
    report = (cli_run / "analysis" / "forecast" / "report.md").read_text()
    assert "## Forecast" in report and "forecast_mIoU.png" in report and "90% prediction interval" in report
    assert "Which predictor to trust" in report and "best by LOO MAE" in report
    assert "forecast_fig15_predictions.png" in report  # the simulated zoo has no weights: the model alone
    assert (cli_run / "analysis" / "forecast" / "forecast_ece.png").stat().st_size > 0
    table, meta = read_reference(cli_run / "reference" / "tiny" / TABLE_FILE)
    assert meta["profile"] == "tiny" and sorted(meta["models"]) == sorted(zoo["model"].unique())
    assert meta["datasets"]["acdc_fog_test"]["split"] == "train" and meta["synthrel_version"]
    assert len(table) == len(zoo)

    # a user with the published table only (no zoo results, no real data) gets the same forecast
    published = tmp_path / "published"
    published.mkdir()
    for name in (TABLE_FILE, PROVENANCE_FILE):
        shutil.copy(cli_run / "reference" / "tiny" / name, published / name)
    cfg = _compose(world, "model=tiny_unseen", "stages.forecast.results_root=null",
                   f"stages.forecast.reference={published / TABLE_FILE}",
                   "stages.forecast.evaluate.datasets=[synthetic_fog,synthetic_night,synthetic_rain,synthetic_snow,"
                   "synthetic_india]", f"stages.forecast.output_dir={tmp_path}/analysis",
                   f"stages.report.analysis_dir={tmp_path}/analysis")
    run_stages(cfg)
    again = pd.read_csv(tmp_path / "analysis" / "forecast.csv")
    first = pd.read_csv(cli_run / "analysis" / "forecast" / "forecast.csv")
    pd.testing.assert_frame_equal(again.drop(columns="actual"), first.drop(columns="actual"))
    assert again["actual"].isna().all()
    settings = json.loads((tmp_path / "analysis" / "forecast_settings.json").read_text())
    assert settings["reference"] == str(published / TABLE_FILE)
    assert "measured real" not in (tmp_path / "analysis" / "forecast_table.md").read_text()

    (published / TABLE_FILE).write_bytes((published / TABLE_FILE).read_bytes() + b"\0")
    with pytest.raises(DatasetError, match="does not match the sha256"):
        read_reference(published / TABLE_FILE)


def _compose(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "+experiment=forecast", "profile=tiny", "device=cpu", f"paths.root_dir={root}",
            f"paths.output_dir={root}/run", *overrides])


def test_forecast_without_a_model_or_synthetic_sets_says_what_to_do(tmp_path):
    with pytest.raises(InstantiationException, match="no model to forecast: choose one with model=mmseg") as error:
        hydra.utils.instantiate(_compose(tmp_path).stages.forecast, _convert_="all")
    assert isinstance(error.value.__cause__, ConfigError)
    for model, missing in (("mmseg", "model.config=..., model.checkpoint=..."), ("transformers", "model.config=..."),
                           ("python", "model.builder._target_=...")):
        with pytest.raises(InstantiationException, match=f"model={model} needs {re.escape(missing)} on the command"):
            hydra.utils.instantiate(_compose(tmp_path, f"model={model}").stages.forecast, _convert_="all")
    write_results(simulated_zoo(), tmp_path / "outputs" / "tiny" / "artifacts" / "results" / "tiny")
    job = hydra.utils.instantiate(_compose(tmp_path, "model=tiny_unseen").stages.forecast, _convert_="all")
    with pytest.raises(DatasetError, match="no synthetic set of generator 'sd15' is on disk.*generate them first"):
        job.run()
    paper = write_reference(simulated_zoo(profile="paper"), {"zoo": "sim"}, tmp_path / "paper_reference")
    job.reference = str(paper)
    with pytest.raises(ConfigError, match="made with profile \\['paper'\\] but this run has profile='tiny'"):
        job.run()


def test_the_forecasts_evaluation_runs_with_the_runs_seed(tmp_path):
    """The evaluate settings it reuses state no seed: the run's seed reaches its evaluation (calibration pixels)."""
    from synthrel.stages import build_job

    assert build_job(_compose(tmp_path, "model=tiny_unseen", "seed=7"), "forecast")._evaluator(["cityscapes_test"]).seed == 7
    job = build_job(_compose(tmp_path, "model=tiny_unseen", "seed=7", "+stages.forecast.evaluate.seed=2"), "forecast")
    assert job._evaluator(["cityscapes_test"]).seed == 2


def test_qualitative_figures_put_the_strongest_and_weakest_zoo_models_beside_yours(tmp_path):
    cfg = _compose(tmp_path, "model=tiny_unseen")
    job = hydra.utils.instantiate(cfg.stages.forecast, _convert_="all")
    zoo = simulated_zoo()
    keys = sorted(job.zoo["models"])
    zoo["model"] = zoo["model"].map(dict(zip(sorted(zoo["model"].unique()), keys, strict=False)))
    mean = zoo[(zoo["generator"] == "sd15") & (zoo["metric"] == "mIoU")].groupby("model")["value"].mean()
    assert job._qualitative_zoo_models(zoo) == [mean.idxmax(), mean.idxmin()]
    job.qualitative_models = ["no_such_model"]
    with pytest.raises(ConfigError, match="unknown zoo model 'no_such_model'.*qualitative_models"):
        job._qualitative_zoo_models(zoo)


def test_fig16_confidence_maps_of_several_models(tmp_path):
    from synthrel.forecast.qualitative import ood_confidence_figure, predictions_figure

    class Constant:
        """A model as seen by the figures: `logits` of a (1, H, W, 3) batch."""

        def __init__(self, cls):
            self.cls = cls

        def logits(self, images):
            out = torch.zeros(1, 19, *images.shape[1:3])
            out[:, self.cls] = 5.0
            return out

    rng = np.random.default_rng(0)
    sample = {"id": "zebra_0", "image": rng.integers(0, 256, (32, 64, 3), dtype=np.uint8),
              "label": rng.integers(0, 19, (32, 64)).astype(np.uint8),
              "ood": np.pad(np.ones((8, 8), np.uint8), ((12, 12), (28, 28)))}
    models = {"strong": Constant(0), "weak": Constant(13), "mine": Constant(2)}
    for paths in (ood_confidence_figure([sample, sample], models, tmp_path / "fig16"),
                  predictions_figure({"fog": sample}, models, tmp_path / "fig15")):
        assert [Path(p).suffix for p in paths] == [".png", ".pdf"] and all(Path(p).stat().st_size for p in paths)
