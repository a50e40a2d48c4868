"""A tiny profile tree (tiny SD1.5 + a ControlNet, a Cityscapes layout with captions) for multi-process runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory):
    """paths.output_root of a profile=tiny run: tiny/models/sd15, tiny/data/cityscapes, tiny/artifacts/captions."""
    from benchmarks.multigpu import build_controlnet, write_captions, write_cityscapes_layout
    from synthrel.tiny.diffusion import build_tiny_sd

    root = tmp_path_factory.mktemp("outputs")
    models = root / "tiny" / "models"
    build_tiny_sd(models / "sd15", "sd15")
    build_controlnet(models / "sd15", models / "controlnet_sd15")
    data = root / "tiny" / "data" / "cityscapes"
    captions = root / "tiny" / "artifacts" / "captions"
    for split, count, seed in (("train", 8, 0), ("val", 4, 1)):
        ids = write_cityscapes_layout(data, split, count, size=64, seed=seed)
        write_captions(captions / f"cityscapes_{split}.jsonl", ids, seed=seed)
    return root


def synthrel_run(*overrides: str) -> subprocess.Popen:
    """Start `python -m synthrel.run` with one intra-op thread (several processes share two cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "synthrel.run", *overrides], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(procs: list[subprocess.Popen], timeout_s: float = 900) -> None:
    """Wait for every process; on failure show its output."""
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout_s)
        assert proc.returncode == 0, f"{' '.join(proc.args[2:])} failed:\n{out[-6000:]}"


@pytest.fixture
def run_synthrel():
    return synthrel_run


@pytest.fixture
def finish_all():
    return finish
