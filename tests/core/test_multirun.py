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
    DemoDataJob(root=str(root / "data"), n_train=2, n_val=2, n_shift=2, n_ood=2).run()
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
                          env={**os.environ, **ENV, **(env or {})}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _check_sweep(cwd: Path) -> Path:
    """Both jobs ran in the user's folder: Hydra job folders with their own overrides, one result per pair."""
    sweeps = list((cwd / "outputs" / "logs" / "run" / "multiruns").iterdir())
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
    _run(cwd, *SWEEP)
    sweep = _check_sweep(cwd)
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
