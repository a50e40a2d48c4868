"""The calibration recipes (Fig. 6, Fig. 14, Table 3) as their scripts run them: composed for every domain of
their sweep, they fit real temperatures on relis calibration splits only and test on the test splits."""

import hashlib
import re
import shlex

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from synthrel.config import check_domain
from synthrel.run import CONF_DIR

EXPERIMENTS = CONF_DIR.parents[1] / "experiments"
# Spec 2.1, written out: the real calibration and test splits of every domain.
SPEC_SPLITS = {"fog": ("acdc_fog_calib", "acdc_fog_test"), "night": ("acdc_night_calib", "acdc_night_test"),
               "rain": ("acdc_rain_calib", "acdc_rain_test"), "snow": ("acdc_snow_calib", "acdc_snow_test"),
               "india": ("idd_calib", "idd_test")}
REAL_WHOLE = {"cityscapes", "acdc_fog", "acdc_night", "acdc_rain", "acdc_snow", "idd"}


def calibration_runs(script: str) -> list[list[str]]:
    """The Hydra overrides of each `run -m ... +experiment=calibration` line of a recipe."""
    text = re.sub(r"\\\n\s*", " ", (EXPERIMENTS / script).read_text())
    runs = []
    for line in text.splitlines():
        if line.startswith("run -m") and "+experiment=calibration" in line:
            runs.append([t for t in shlex.split(line)[2:] if not t.startswith("$")])
    return runs


def sweep(overrides: list[str]) -> list[list[str]]:
    """Override lists for the domain sweep (the only comma sweep of these recipes): its ACDC and IDD values
    fog and india (the other ACDC conditions compose the same way; kept out to keep the test cheap)."""
    domains = next(o for o in overrides if o.startswith("domain=")).split("=", 1)[1].split(",")
    assert set(domains) == set(SPEC_SPLITS)
    rest = [o for o in overrides if not o.startswith("domain=")]
    return [[*rest, f"domain={d}"] for d in ("fog", "india")]


@pytest.mark.parametrize("script", ["fig6.sh", "fig14.sh", "table3.sh"])
def test_recipe_fits_on_calibration_splits_and_tests_on_test_splits(compose_cfg, script):
    runs = calibration_runs(script)
    assert runs, f"{script} has no calibration run"
    for overrides in runs:
        for one in sweep(overrides):
            cfg = compose_cfg(*one)
            domain = one[-1].split("=")[1]
            check_domain(cfg, domain)
            calib = OmegaConf.to_container(cfg.stages.calibrate, resolve=True)
            evaluated = set(OmegaConf.to_container(cfg.stages.evaluate.datasets, resolve=True))
            real_calib, real_test = SPEC_SPLITS[domain]
            assert calib["targets"] == [real_test], (script, one)
            fitted = {k for keys in calib["calibration_sets"].values() for k in keys}
            assert not fitted & (REAL_WHOLE | {real_test, "cityscapes_test"}), (script, one, fitted)
            assert not calib["allow_overlap"]
            assert {real_test, real_calib, "cityscapes_calib"} <= evaluated  # what it fits and tests on exists
            if script == "fig6.sh":
                assert calib["calibration_sets"]["real"] == [real_calib]
            if script == "table3.sh":  # the paper's per-class TS, applied as the official code does
                assert calib["methods"] == ["per_class"] and calib["per_class_rule"] == "per_channel"


def analysis_runs(script: str) -> list[list[str]]:
    """The Hydra overrides of each `run profile=... +experiment=correlation` line of a recipe."""
    text = re.sub(r"\\\n\s*", " ", (EXPERIMENTS / script).read_text())
    return [[t for t in shlex.split(line)[1:] if not t.startswith("$") and not t.startswith(("profile=", "real_split=$"))]
            for line in text.splitlines() if line.startswith("run profile=") and "+experiment=correlation" in line]


@pytest.mark.parametrize("script", ["fig6.sh", "fig14.sh", "table3.sh"])
def test_each_analysis_reads_exactly_the_calibration_of_its_own_sweep(compose_cfg, script):
    """No folder to set by hand: the analysis after each calibrate sweep reads the folder every job of that sweep
    wrote, and no other recipe's."""
    sweeps, analyses = calibration_runs(script), analysis_runs(script)
    assert len(sweeps) == len(analyses)
    roots = set()
    for sweep_overrides, analysis in zip(sweeps, analyses, strict=True):
        root = compose_cfg(*analysis).stages.correlate.calibration_root
        for one in sweep(sweep_overrides):
            assert compose_cfg(*one).stages.calibrate.output_dir == root, (script, one)
        roots.add(root)
    assert len(roots) == len(sweeps)


def _fake_calibration(folder, methods: dict[str, list[str]], seed: int) -> None:
    """calibration.parquet as the calibrate stage writes it: 3 models, calibration set -> methods, fog."""
    rng = np.random.default_rng(seed)
    rows = []
    for model in ("m1", "m2", "m3"):
        for calib_set, set_methods in methods.items():
            for method in set_methods:
                raw, ts = 0.2, rng.uniform(0.05, 0.3)
                for metric, value in (("ece_raw", raw), ("ece_ts", ts), ("ece_rel_improvement", (raw - ts) / raw)):
                    rows.append({"model": model, "family": "f", "dataset": "acdc_fog_test", "domain": "fog",
                                 "generator": "real", "metric": metric, "cls": "", "value": value, "n_images": 2,
                                 "profile": "paper", "calib_set": calib_set, "method": method,
                                 "objective": "ece_grid", "per_class_rule": "per_channel", "n_shared_images": 0})
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "calibration.parquet")


def test_fig14a_and_fig14b_differ_where_their_calibration_differs(compose_cfg, tmp_path):
    """experiments/fig14.sh: (a) per-class vs standard TS on synthetic data, (b) Cityscapes vs synthetic, standard
    TS. Each analysis shows its own comparison, whatever else the calibration root holds."""
    from synthrel.analysis.jobs import CorrelateJob

    results = tmp_path / "outputs" / "artifacts" / "results" / "paper40" / "m" / "acdc_fog"
    results.mkdir(parents=True)
    pd.DataFrame([{"model": m, "family": "f", "dataset": "acdc_fog", "domain": "fog", "generator": "real",
                   "metric": "mIoU", "cls": "", "value": v, "n_images": 2, "profile": "paper"}
                  for m, v in (("m1", 0.3), ("m2", 0.5), ("m3", 0.4))]).to_parquet(results / "metrics.parquet")
    calibration = tmp_path / "outputs" / "artifacts" / "calibration" / "paper40"
    _fake_calibration(calibration / "fig14a_calibrate", {"synthetic": ["global", "per_class-per_channel"]}, seed=0)
    _fake_calibration(calibration / "fig14b_calibrate", {"synthetic": ["global"], "cityscapes": ["global"]}, seed=0)
    _fake_calibration(calibration / "fig6_calibrate", {"real": ["global"]}, seed=1)  # another recipe's sweep
    outputs = {}
    for overrides in analysis_runs("fig14.sh"):
        cfg = compose_cfg(*overrides)
        job = CorrelateJob(**{k: v for k, v in OmegaConf.to_container(cfg.stages.correlate, resolve=True).items()
                              if k != "_target_" and k != "_recursive_"})
        job.run()
        outputs[cfg.task_name] = job.output_dir
    shown = {task: pd.read_csv(f"{out}/calibration_summary.csv").groupby("calib_set")["method"].apply(set).to_dict()
             for task, out in outputs.items()}
    assert shown == {"fig14a": {"synthetic": {"global", "per_class-per_channel"}},
                     "fig14b": {"synthetic": {"global"}, "cityscapes": {"global"}}}

    def digest(path) -> str:
        return hashlib.md5(open(path, "rb").read()).hexdigest()

    for name in ("fig6_ece_improvement.png", "table3_calibration_success.csv"):
        assert digest(f"{outputs['fig14a']}/{name}") != digest(f"{outputs['fig14b']}/{name}"), name
