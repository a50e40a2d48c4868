"""Two runs on one output: the second stops with a clear message instead of redoing the work beside the first;
shards of one folder run side by side; every run gets its own Hydra run folder."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from reliability_utils import EVALUATE, SUBPROCESS_ENV, Cli, base_overrides, run_cli, synthrel_command

from synthrel.jobs import Shard, exclusive_output

ONE_PAIR = ["+stage=[evaluate]", "stages.evaluate.models=[pspnet_r18]", "stages.evaluate.datasets=[cityscapes]",
            "stages.evaluate.num_workers=0"]


def _wait_for_text(path, text: str, cli: Cli, timeout: float = 600) -> None:
    """Until the log at `path` holds `text` (the process reached that point), or fail with the log."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert cli.poll() is None, f"exited {cli.poll()} before {text!r}:\n{path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, path.read_text()[-3000:]
        time.sleep(0.2)


def test_a_second_run_on_a_pair_being_evaluated_waits_for_it_then_takes_or_makes_it(world, tmp_path):
    """Jobs of one sweep share pairs (cityscapes_calib in the calibration sweep): a run that finds a pair held by
    another waits, naming the holder, and writes nothing beside it; once the holder is gone it evaluates the
    pair itself if the holder left it unfinished (a finished one it takes: tests/core/test_multirun.py)."""
    artifacts = tmp_path / "artifacts"
    pair = artifacts / "results" / "tiny" / "pspnet_r18" / "cityscapes"
    with exclusive_output(pair):  # this test process is "the first run"; it stops without finishing the pair
        cli = Cli([*base_overrides(world, artifacts), *ONE_PAIR], cwd=tmp_path)
        _wait_for_text(Path(cli.log.name), f"waiting for another synthrel run writing {pair}", cli)
        assert '"pid":' in Path(cli.log.name).read_text()
        assert not (pair / "DONE").exists() and not (pair / "metrics.parquet").exists()
    assert cli.wait() == 0, Path(cli.log.name).read_text()[-3000:]
    assert (pair / "DONE").exists()


def test_other_shards_of_a_folder_run_beside_each_other(world, tmp_path):
    artifacts = tmp_path / "artifacts"
    evaluate = [o for o in EVALUATE if not o.startswith("stages.evaluate.models")] + ["stages.evaluate.models=[pspnet_r18]"]
    results = artifacts / "results" / "tiny" / "pspnet_r18"
    with exclusive_output(results / "cityscapes", Shard(0, 2)):  # shard 0 holds its pairs
        proc = run_cli([*base_overrides(world, artifacts), *evaluate, "shard=1/2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p.parent.name for p in results.glob("*/DONE")} == {"acdc_fog"}  # pair 1 of 3: shard 1/2's only pair


def test_runs_started_in_the_same_second_get_their_own_run_folders(world, tmp_path):
    artifacts = tmp_path / "artifacts"
    command = synthrel_command([*base_overrides(world, artifacts), "+stage=[evaluate]", "seed=abc"])  # fails fast
    procs = [subprocess.Popen(command, cwd=tmp_path, env={**os.environ, **SUBPROCESS_ENV},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(3)]
    for proc in procs:
        proc.wait(timeout=600)
    runs = sorted((artifacts / "logs" / "run" / "runs").iterdir())
    assert len(runs) == 3, runs


def test_calibrate_and_analysis_outputs_are_locked_while_another_run_writes_them(tmp_path, caplog):
    """correlate and report stop at once, naming the folder, while another run holds it (and write nothing);
    calibrate, whose task folder the jobs of a sweep share, waits for the holder instead; once released they run."""
    import json
    import logging

    import numpy as np
    import pytest

    from synthrel.analysis.jobs import CorrelateJob
    from synthrel.analysis.report import ReportJob
    from synthrel.calibration.job import CalibrateJob
    from synthrel.jobs import OutputBusyError

    rng = np.random.default_rng(0)
    root = tmp_path / "results"
    for key in ("synth", "real"):
        folder = root / "m" / key
        folder.mkdir(parents=True)
        np.savez(folder / "calib_sample.npz", logits=rng.normal(size=(400, 19)).astype(np.float32),
                 labels=rng.integers(0, 19, 400).astype(np.uint8), image_index=np.repeat(np.arange(4), 100),
                 features=np.zeros((4, 8), np.float32), image_ids=np.array([f"{key}{i}" for i in range(4)]))
    calib = CalibrateJob(results_root=str(root), output_dir=str(tmp_path / "calib"),
                         calibration_sets={"s": ["synth"]}, targets=["real"], objective="nll")
    analysis = tmp_path / "analysis"
    jobs = {analysis: CorrelateJob(output_dir=str(analysis), results_root=str(root), profile="tiny"),
            tmp_path / "report": ReportJob(analysis_dir=str(analysis), output_dir=str(tmp_path / "report"))}
    for folder, job in jobs.items():
        with exclusive_output(folder):
            with pytest.raises(OutputBusyError, match=f"another synthrel run is writing {folder}: .*\"pid\""):
                job.run()
        assert [p.name for p in folder.iterdir()] == [".synthrel.lock"], "a refused run wrote its outputs"
    summary = {}
    with caplog.at_level(logging.INFO, logger="synthrel.jobs"):
        with exclusive_output(tmp_path / "calib"):
            waiter = threading.Thread(target=lambda: summary.update(calib.run()))
            waiter.start()
            deadline = time.monotonic() + 600
            while not any("waiting for another synthrel run" in r.getMessage() for r in caplog.records):
                assert waiter.is_alive() and time.monotonic() < deadline, "calibrate did not wait"
                time.sleep(0.05)
            assert [p.name for p in (tmp_path / "calib").iterdir()] == [".synthrel.lock"]
        waiter.join(timeout=600)
    assert summary["fitted"] == 1
    assert json.loads(next((tmp_path / "calib").rglob("m.json")).read_text())["model"] == "m"
