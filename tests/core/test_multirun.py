"""Hydra multirun as a user types it (README, synthrel/conf/stage/evaluate.yaml), from a folder that is not the repository
and with no path override, through each launcher of synthrel/conf/launcher/: local, submitit_local and slurm (through
tests/core/fake_slurm.py: the real sbatch script, run by stand-ins for sbatch/srun/sacct)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import fake_slurm
import pandas as pd
import pytest
import yaml

from benchmarks.multigpu import write_captions

REPO = Path(__file__).resolve().parents[2]
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "TQDM_DISABLE": "1",
       "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
# The sweep of synthrel/conf/stage/evaluate.yaml's comment: one (model, dataset) pair per job.
SWEEP = ["-m", "profile=tiny", "+stage=[evaluate]", "stages.evaluate.models=[segformer_b0],[segformer_b0_s20]",
         "stages.evaluate.datasets=[acdc_fog]"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """A small demo data set and the zoo models these tests evaluate, in the folders that `+stage=[demo_data]`
    and `+stage=[tiny_models]` write on the tiny profile (only these segmenters: the tests read nothing else),
    copied per test."""
    from synthrel.data.demo import DemoDataJob
    from synthrel.tiny.segmentation import ensure_tiny_segmenter

    root = tmp_path_factory.mktemp("demo")
    DemoDataJob(root=str(root / "data"), n_train=2, n_val=3, n_shift=2, n_ood=2).run()  # val: the 3 cities
    for key, spec in (("segformer_b0", "segformer_b0"), ("segformer_b0_s20", "segformer_b0"),
                      ("dlv3p_r18", "dlv3p_r18")):
        ensure_tiny_segmenter(spec, root / "models" / "zoo" / key)
    return root


def _user_folder(tmp_path: Path, demo_data: Path) -> Path:
    cwd = tmp_path / "work"
    shutil.copytree(demo_data / "data", cwd / "outputs" / "tiny" / "data")
    shutil.copytree(demo_data / "models", cwd / "outputs" / "tiny" / "models")
    return cwd


def _run(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "synthrel.run", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **ENV, **(env or {})}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _check_sweep(cwd: Path) -> Path:
    """Both jobs ran in the user's folder: Hydra job folders with their own overrides, one result per pair."""
    sweeps = list((cwd / "outputs" / "logs" / "multiruns").iterdir())
    assert len(sweeps) == 1
    for num, model in enumerate(["segformer_b0", "segformer_b0_s20"]):
        job = sweeps[0] / str(num)
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert f"stages.evaluate.models=[{model}]" in overrides
        summary = yaml.safe_load((job / "summary.yaml").read_text())
        assert summary["evaluate"]["evaluated"] == 1
        assert (cwd / "outputs/tiny/artifacts/results/tiny" / model / "acdc_fog" / "DONE").is_file()
    return sweeps[0]


@pytest.mark.parametrize("launcher", ["launcher=local", "launcher=submitit_local"])
def test_multirun_from_any_folder(tmp_path, demo_data, launcher):
    cwd = _user_folder(tmp_path, demo_data)
    _run(cwd, *SWEEP, launcher)
    sweep = _check_sweep(cwd)
    if launcher == "launcher=submitit_local":
        assert len(list((sweep / ".submitit").rglob("*_result.pkl"))) == 2, "jobs did not run through submitit"


def test_aggregate_takes_only_the_sweeps_jobs_each_with_its_own_overrides(tmp_path, demo_data):
    """experiments/README.md: `python -m synthrel.analysis.aggregate <multirun dir> --out t.parquet`, on a shared
    results root that already holds another run's results (dlv3p_r18 on acdc_fog)."""
    cwd = _user_folder(tmp_path, demo_data)
    _run(cwd, "profile=tiny", "+stage=[evaluate]", "stages.evaluate.models=[dlv3p_r18]",
         "stages.evaluate.datasets=[acdc_fog]")
    printed = _run(cwd, *SWEEP).stdout
    sweep = _check_sweep(cwd)
    assert f"sweep folder: {sweep.resolve()}" in printed  # the folder to give aggregate, as each job prints it
    proc = subprocess.run([sys.executable, "-m", "synthrel.analysis.aggregate", str(sweep), "--out", "t.parquet"],
                          cwd=cwd, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_parquet(cwd / "t.parquet")
    results = cwd / "outputs/tiny/artifacts/results/tiny"
    assert (results / "dlv3p_r18" / "acdc_fog" / "DONE").is_file()
    assert sorted(table["model"].unique()) == ["segformer_b0", "segformer_b0_s20"]
    for num, model in enumerate(["segformer_b0", "segformer_b0_s20"]):
        rows = table[table["model"] == model]
        assert set(rows["job_dir"]) == {str(sweep / str(num))}
        assert set(rows["overrides"]) == {" ".join(yaml.safe_load((sweep / str(num) / ".hydra/overrides.yaml")
                                                                  .read_text()))}
        assert f"stages.evaluate.models=[{model}]" in rows["overrides"].iloc[0]
        stored = pd.read_parquet(results / model / "acdc_fog" / "metrics.parquet")
        assert rows[stored.columns].reset_index(drop=True).equals(stored)


def test_slurm_sweep_writes_the_batch_script_and_runs_through_it(tmp_path, demo_data):
    cwd = _user_folder(tmp_path, demo_data)
    state = tmp_path / "slurm"
    env = fake_slurm.install(tmp_path / "bin", state)
    _run(cwd, *SWEEP, "launcher=slurm", env={**env, "SLURM_PARTITION": "gpu", "SLURM_ACCOUNT": "proj42"})
    sweep = _check_sweep(cwd)
    scripts = sorted(state.glob("*.sbatch"))
    assert len(scripts) == 1, "one array job for the sweep"
    script = scripts[0].read_text()
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, re.M))
    # synthrel/conf/launcher/slurm.yaml, as submitit writes it
    assert flags["array"] == "0-1%2"  # array_parallelism 64, capped by submitit at the 2 jobs
    assert flags["partition"] == "gpu" and flags["account"] == "proj42"
    assert flags["gpus-per-node"] == "1" and flags["cpus-per-task"] == "8" and flags["nodes"] == "1"
    assert flags["mem"] == "64GB" and flags["time"] == "240"
    assert flags["output"].startswith(str(sweep / ".submitit"))
    command = script.strip().splitlines()[-1]
    assert command.startswith("srun ") and "-m submitit.core._submit" in command and str(sweep) in command


@pytest.fixture(scope="module")
def diffusion(tmp_path_factory) -> Path:
    """The tiny SD1.5 the generate stage loads on the tiny profile (`models/sd15`) and a ControlNet made from it
    (with captions written per test: what `+experiment=train_controlnet` would leave)."""
    from benchmarks.multigpu import build_controlnet
    from synthrel.tiny.diffusion import build_tiny_sd

    root = tmp_path_factory.mktemp("diffusion")
    build_tiny_sd(root / "sd15", "sd15")
    build_controlnet(root / "sd15", root / "controlnet_sd15")
    return root


# The README's parallel sweeps (section "Run"), on two of their domains and two zoo models.
PARALLEL_SWEEPS = {
    "covariate": ["+experiment=covariate_fog,covariate_night", "backbone.num_inference_steps=2",
                  "++stages.correlate.bootstrap.n_resamples=20"],
    "calibration": ["+experiment=calibration", "domain=fog,night"],
}
# `++`: a sweep over experiments composes its master config without them (so without their stages)
SWEEP_COMMON = ["-m", "profile=tiny", "++stages.evaluate.models=[segformer_b0,dlv3p_r18]",
                "++stages.evaluate.num_workers=0"]


def _sweep_tables(cwd: Path) -> dict[str, pd.DataFrame]:
    """The tables the two sweeps leave: every (model, dataset) result, the calibration of each domain and the
    correlations of each covariate experiment."""
    artifacts = cwd / "outputs" / "tiny" / "artifacts"
    files = sorted((artifacts / "results" / "tiny").rglob("metrics.parquet"))
    files += sorted((artifacts / "calibration" / "tiny").glob("calibration_*/calibration.parquet"))
    files += sorted((artifacts / "analysis").glob("covariate_*/table1_mIoU.csv"))
    tables = {}
    for path in files:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        tables[path.relative_to(artifacts).as_posix()] = table.sort_values(list(table.columns[:4])).reset_index(
            drop=True)
    return tables


@pytest.mark.slow
def test_parallel_sweeps_give_what_the_sequential_ones_give(tmp_path, demo_data, diffusion):
    """The covariate and calibration sweeps of the README through submitit_local (every job in its own process,
    at the same time: the jobs share the Cityscapes pairs and the calibrate stage's task folder) end as with the
    local launcher (one job after the other): same results, calibration and correlation tables."""
    tables = {}
    for launcher in ("local", "submitit_local"):
        cwd = _user_folder(tmp_path / launcher, demo_data)
        models = cwd / "outputs" / "tiny" / "models"
        shutil.copytree(diffusion / "sd15", models / "sd15")
        captions = cwd / "outputs" / "tiny" / "artifacts" / "captions" / "cityscapes_val.jsonl"
        write_captions(captions, sorted(p.name.removesuffix("_leftImg8bit.png") for p in
                                        (cwd / "outputs/tiny/data/cityscapes/leftImg8bit/val").rglob("*.png")), seed=0)
        for name, sweep in PARALLEL_SWEEPS.items():
            extra = [f"backbone.controlnet={diffusion / 'controlnet_sd15'}"] if name == "covariate" else []
            _run(cwd, *SWEEP_COMMON, *sweep, *extra, f"launcher={launcher}")
        sweeps = sorted((cwd / "outputs" / "logs" / "multiruns").iterdir())
        assert len(sweeps) == 2 and all(sorted(p.name for p in s.iterdir() if p.is_dir() and not p.name.startswith("."))
                                        == ["0", "1"] for s in sweeps), "one folder per sweep, with all its jobs"
        if launcher == "submitit_local":
            assert all(len(list((s / ".submitit").rglob("*_result.pkl"))) == 2 for s in sweeps)
        tables[launcher] = _sweep_tables(cwd)
    local, parallel = tables["local"], tables["submitit_local"]
    # 2 models x 8 sets under real_split=test (fog: synthetic, cityscapes_test, cityscapes_calib, acdc_fog_calib,
    # acdc_fog_test; night: its 3 own), the calibration of 2 domains, the correlations of 2 experiments
    assert len(local) == 2 * 8 + 2 + 2, sorted(local)
    assert local.keys() == parallel.keys()
    for name, table in local.items():
        other = parallel[name]
        if "source" in table.columns:
            table, other = table.drop(columns="source"), other.drop(columns="source")
        pd.testing.assert_frame_equal(other, table, obj=name)
