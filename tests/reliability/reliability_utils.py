"""Shared helpers of the reliability tests: the tiny world's overrides, a killable `python -m synthrel.run`,
and checks on what a job left on disk (manifests, half-written files, decodable PNGs, equal outputs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
# Offline, quiet, one thread: what every subprocess of these tests runs with.
SUBPROCESS_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "TQDM_DISABLE": "1",
                  "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

# Stage settings small enough for a CPU test, on the world built by conftest.py (paths filled by `stage_overrides`).
GENERATE = ["+stage=[generate]", "backbone.resolution=64", "backbone.num_inference_steps=2", "profile.num_samples=6",
            "stages.generate.batch_size=1", "domain=fog"]
INPAINT = ["+stage=[inpaint]", "stages.inpaint.objects=[zebra,armchair]", "stages.inpaint.samples_per_object=3",
           "stages.inpaint.patch_size=64", "stages.inpaint.num_inference_steps=2", "stages.inpaint.refine_steps=2",
           "stages.inpaint.box_threshold=0.0", "stages.inpaint.text_threshold=0.0"]
EVALUATE = ["+stage=[evaluate]", "stages.evaluate.models=[pspnet_r18,segformer_b0]",
            "stages.evaluate.datasets=[cityscapes,acdc_fog,idd]", "stages.evaluate.num_workers=0",
            "stages.evaluate.batch_size=2"]
ZOO_MODELS = {"pspnet_r18": "pspnet_r18", "segformer_b0": "segformer_b0"}


def base_overrides(world: Path, artifacts: Path) -> list[str]:
    """The tiny profile on the shared world (models, demo data), writing under `artifacts`."""
    return ["profile=tiny", "device=cpu", f"paths.root_dir={world}", f"paths.artifacts_dir={artifacts}",
            f"paths.log_dir={artifacts}/logs"]


def stage_overrides(world: Path, artifacts: Path, stage: list[str]) -> list[str]:
    extra = []
    if any(o.startswith("+stage=") and "generate" in o for o in stage):
        extra = [f"backbone.controlnet={world}/controlnet_sd15", f"stages.generate.captions={world}/captions_val.jsonl"]
    return [*base_overrides(world, artifacts), *extra, *stage]  # the test's own values win


def synthrel_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "synthrel.run", *overrides]


def run_cli(overrides: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m synthrel.run <overrides>` as a user runs it; stdout + stderr captured as text."""
    return subprocess.run(synthrel_command(overrides), cwd=cwd, env={**os.environ, **SUBPROCESS_ENV},
                          capture_output=True, text=True, timeout=timeout)


def count_records(manifest: Path) -> int:
    """Complete lines of a JSONL manifest (a kill may leave a truncated last line)."""
    if not manifest.exists():
        return 0
    return manifest.read_bytes().count(b"\n")


class Cli:
    """`python -m synthrel.run <overrides>` in a subprocess, its output in a log file under `cwd`."""

    def __init__(self, overrides: list[str], cwd: Path):
        self.log = open(cwd / f"killed_{time.monotonic_ns()}.log", "w")
        self.proc = subprocess.Popen(synthrel_command(overrides), cwd=cwd, env={**os.environ, **SUBPROCESS_ENV},
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self) -> int:
        code = self.proc.wait()
        self.log.close()
        return code


def run_and_kill(start, manifest: Path, after_records: int, delay: float, timeout: float = 600) -> dict:
    """Start the job (`start()` gives a Cli), wait until `manifest` holds `after_records` records,
    wait `delay` s more, then SIGKILL it. Returns the records at the kill and whether the job had ended."""
    proc = start()
    deadline = time.monotonic() + timeout
    try:
        while count_records(manifest) < after_records:
            if proc.poll() is not None:
                return {"killed": False, "returncode": proc.poll(), "records": count_records(manifest)}
            if time.monotonic() > deadline:
                raise TimeoutError(f"{manifest} did not reach {after_records} records in {timeout} s")
            time.sleep(0.005)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        return {"killed": killed, "returncode": proc.wait(), "records": count_records(manifest)}
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def temp_leftovers(folder: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (`.<name>.<random>.tmp<suffix>`)."""
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def visible_files(folder: Path, pattern: str = "*") -> dict[str, Path]:
    """Files a reader could list: everything but the hidden temporaries of atomic writes and logs."""
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob(pattern))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def manifest_records(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def assert_pngs_decode(folder: Path) -> int:
    """Every visible PNG decodes completely (a truncated file raises here)."""
    pngs = visible_files(folder, "*.png")
    for path in pngs.values():
        with Image.open(path) as im:
            im.load()
    return len(pngs)


def png_arrays(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for rel, path in visible_files(folder, "*.png").items():
        with Image.open(path) as im:
            out[rel] = np.asarray(im)
    return out


def assert_same_pngs(folder: Path, reference: Path) -> None:
    """Same visible PNG files, with identical bytes (hence identical pixels)."""
    got, want = visible_files(folder, "*.png"), visible_files(reference, "*.png")
    assert sorted(got) == sorted(want), f"files differ: {set(got) ^ set(want)}"
    different = [rel for rel in want if got[rel].read_bytes() != want[rel].read_bytes()]
    assert not different, f"{len(different)} PNG(s) differ from the uninterrupted run, e.g. {different[0]}"


def without(record: dict, *keys: str) -> dict:
    return {k: v for k, v in record.items() if k not in keys}


def assert_same_arrays(path: Path, reference: Path) -> None:
    """npy / npz files hold bit-identical arrays."""
    if path.suffix == ".npy":
        np.testing.assert_array_equal(np.load(path), np.load(reference), err_msg=str(path))
        return
    with np.load(path) as got, np.load(reference) as want:
        assert sorted(got.files) == sorted(want.files), path
        for name in want.files:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{path}:{name}")


def assert_same_tables(path: Path, reference: Path) -> None:
    read = pd.read_parquet if path.suffix == ".parquet" else pd.read_csv
    pd.testing.assert_frame_equal(read(path), read(reference), check_exact=True)


class StageRun:
    """A synthrel run as a submitit job that survives preemption: on the preemption signal submitit calls
    `checkpoint`, which resubmits this same run; the stages then resume from their manifests."""

    def __init__(self, overrides: list[str], pid_file: Path):
        self.overrides = overrides
        self.pid_file = pid_file  # where each attempt writes its process id (the task the scheduler signals)
        self.attempts = 0

    def __call__(self) -> dict:
        import torch
        from hydra import compose, initialize_config_dir

        from synthrel.run import CONF_DIR, run_stages

        torch.set_num_threads(1)
        self.attempts += 1
        self.pid_file.write_text(str(os.getpid()))
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=self.overrides)
        return {"attempt": self.attempts, **run_stages(cfg)}

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
