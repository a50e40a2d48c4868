"""Preemption on a cluster, through submitit's own machinery on this machine: a job interrupted with the
preemption signal checkpoints, is requeued and completes with the outputs of an uninterrupted run; and
Hydra's submitit launcher (`launcher=submitit_local`) runs a sharded two-job multirun."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import submitit
from reliability_utils import (
    GENERATE,
    REPO,
    SUBPROCESS_ENV,
    StageRun,
    assert_same_pngs,
    count_records,
    manifest_records,
    run_cli,
    stage_overrides,
)

from synthrel.run import run_stages

SYNTHETIC = Path("synthetic/sd15/fog")


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    from hydra import compose, initialize_config_dir

    from synthrel.run import CONF_DIR

    artifacts = tmp_path_factory.mktemp("reference")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*stage_overrides(world, artifacts, GENERATE),
                                                       f"paths.output_dir={artifacts}/run"])
    run_stages(cfg)
    return artifacts / SYNTHETIC


@pytest.mark.slow  # ~60 s, mostly submitit's local controller waiting to requeue
def test_preempted_submitit_job_is_requeued_and_resumes(world, reference, tmp_path, monkeypatch):
    for key, value in SUBPROCESS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(Path(__file__).parent)]))
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=10)
    pid_file = tmp_path / "task.pid"
    job = executor.submit(StageRun([*stage_overrides(world, tmp_path, GENERATE), f"paths.output_dir={tmp_path}/run"],
                                   pid_file))
    manifest = tmp_path / SYNTHETIC / "manifest.jsonl"
    deadline = time.monotonic() + 600
    while count_records(manifest) < 2:
        assert not job.done(), f"the job ended before its preemption: {job.stderr()}"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.01)
    # the preemption signal SLURM sends to the task (submitit's LocalJob._interrupt signals the controller, which
    # does not forward it in submitit 1.5)
    os.kill(int(pid_file.read_text()), submitit.JobEnvironment._usr_sig())
    result = job.result()
    # the second attempt is the resubmission that `checkpoint` returned (the first was counted before pickling)
    assert result["attempt"] == 2, result
    assert result["generate"]["skipped"] >= 2 and result["generate"]["generated"] >= 1
    ids = [r["id"] for r in manifest_records(manifest)]
    assert len(ids) == len(set(ids)) == 6
    assert_same_pngs(tmp_path / SYNTHETIC, reference)


@pytest.mark.slow
def test_hydra_submitit_local_launcher_runs_a_sharded_multirun(world, reference, tmp_path):
    result = run_cli(["-m", "launcher=submitit_local", *stage_overrides(world, tmp_path, GENERATE),
                      "shard=0/2,1/2"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((tmp_path / "logs").rglob(".submitit/*/*_result.pkl"))
    assert len(jobs) == 2, jobs
    ids = [r["id"] for r in manifest_records(tmp_path / SYNTHETIC / "manifest.jsonl")]
    assert len(ids) == len(set(ids)) == 6
    assert_same_pngs(tmp_path / SYNTHETIC, reference)
