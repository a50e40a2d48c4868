"""A full disk while a job writes: the job fails with an error naming the output folder, the outputs written
before are intact (nothing half-written is visible) and a re-run on a freed disk completes the job."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from reliability_utils import (
    EVALUATE,
    GENERATE,
    assert_pngs_decode,
    assert_same_pngs,
    manifest_records,
    run_cli,
    stage_overrides,
    visible_files,
)

import synthrel.data.io
import synthrel.evaluation.results
import synthrel.jobs
from synthrel.data.synthetic import SyntheticDataset
from synthrel.jobs import DiskFullError, IncompleteOutputError
from synthrel.run import run_stages

SYNTHETIC = Path("synthetic/sd15/fog")
GENERATE_4 = [*GENERATE, "profile.num_samples=4"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {rel: p.read_bytes() for rel, p in visible_files(folder).items() if "logs" not in rel}


def assert_kept(before: dict[str, bytes], after: dict[str, bytes]) -> None:
    """Every earlier file is unchanged; the manifest only grew at its end."""
    manifest = before.pop("manifest.jsonl")
    assert after["manifest.jsonl"].startswith(manifest), "earlier manifest records changed"
    assert {k: v for k, v in after.items() if k in before} == before, "an earlier output changed"


@pytest.fixture
def disk_full_after(monkeypatch):
    """`disk_full_after(k, module)`: the atomic writes of `module` fail with ENOSPC once k files are written,
    raised from inside the write as a real full disk does (the atomic_path of synthrel.jobs still runs)."""
    real = synthrel.jobs.atomic_path

    def install(k: int, *modules):
        written = []

        @contextlib.contextmanager
        def full_disk(path):
            with real(path) as tmp:
                if len(written) >= k:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                yield tmp
                written.append(path)

        for module in modules:
            monkeypatch.setattr(module, "atomic_path", full_disk)
        return written

    yield install
    monkeypatch.undo()


def test_generate_on_a_full_disk_keeps_earlier_items_and_resumes(compose_world, tmp_path, disk_full_after):
    reference = tmp_path / "reference"
    run_stages(compose_world(reference, *GENERATE_4))
    artifacts = tmp_path / "artifacts"
    run_stages(compose_world(artifacts, *GENERATE, "profile.num_samples=2"))  # the earlier outputs
    out = artifacts / SYNTHETIC
    before = snapshot(out)

    written = disk_full_after(5, synthrel.data.io)  # item 3's 4 files, then item 4's first file fails
    with pytest.raises(DiskFullError, match=rf"no space left on the device of output folder {out}/\S+ while "
                                            r"writing \S+\.png .*files written before are kept"):
        run_stages(compose_world(artifacts, *GENERATE_4))
    assert len(written) == 5
    assert_kept(before, snapshot(out))
    assert len(manifest_records(out / "manifest.jsonl")) == 3 and assert_pngs_decode(out)
    with pytest.raises(IncompleteOutputError, match="is incomplete: its writer stopped"):
        SyntheticDataset(out)  # the stopped run's set is refused until a re-run finishes it (issue #35 item 2)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "a temporary file was left behind"

    disk_full_after(10**9, synthrel.data.io)  # space freed
    summary = run_stages(compose_world(artifacts, *GENERATE_4))["generate"]
    assert summary["skipped"] == 3 and summary["generated"] == 1
    assert_same_pngs(out, reference / SYNTHETIC)
    assert len(SyntheticDataset(out)) == 4  # finished: readable again


def test_evaluate_on_a_full_disk_keeps_finished_pairs(compose_world, tmp_path, disk_full_after):
    one = [*EVALUATE, "stages.evaluate.models=[pspnet_r18]"]
    artifacts = tmp_path / "artifacts"
    run_stages(compose_world(artifacts, *one, "stages.evaluate.datasets=[cityscapes]"))
    results = artifacts / "results" / "tiny"
    before = snapshot(results)

    disk_full_after(3, synthrel.evaluation.results, synthrel.jobs)
    with pytest.raises(DiskFullError, match=rf"output folder {results}/pspnet_r18/acdc_fog while writing"):
        run_stages(compose_world(artifacts, *one, "stages.evaluate.datasets=[cityscapes,acdc_fog]"))
    assert_kept(before, snapshot(results))
    assert not (results / "pspnet_r18" / "acdc_fog" / "DONE").exists()
    assert [r["job"] for r in manifest_records(results / "manifest.jsonl")] == ["pspnet_r18/cityscapes"]

    disk_full_after(10**9, synthrel.evaluation.results, synthrel.jobs)
    summary = run_stages(compose_world(artifacts, *one, "stages.evaluate.datasets=[cityscapes,acdc_fog]"))
    summary["evaluate"].pop("steady_rates")  # timings (synthrel/runstats.py), not outputs
    assert summary["evaluate"] == {"results_dir": str(results), "evaluated": 1, "skipped": 1,
                                   "absent": [], "shard": "0/1", "pairs": 2,
                                   "result_dirs": [str(results / "pspnet_r18" / d) for d in ("cityscapes", "acdc_fog")]}
    assert (results / "pspnet_r18" / "acdc_fog" / "DONE").exists()


@pytest.fixture
def small_filesystem(tmp_path):
    """A 320 KiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    mount_point = tmp_path / "small_fs"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


@pytest.mark.slow
def test_generate_cli_on_a_real_full_filesystem(world, compose_world, small_filesystem, tmp_path):
    artifacts = small_filesystem / "artifacts"
    run_stages(compose_world(artifacts, *GENERATE, "profile.num_samples=2"))
    out = artifacts / SYNTHETIC
    before = snapshot(out)
    overrides = [o if not o.startswith("paths.log_dir=") else f"paths.log_dir={tmp_path}/logs"
                 for o in stage_overrides(world, artifacts, [*GENERATE, "profile.num_samples=60"])]
    result = run_cli(overrides, cwd=tmp_path)
    assert result.returncode != 0
    assert "DiskFullError" in result.stderr and f"output folder {out}" in result.stderr, result.stderr[-3000:]
    assert_kept(before, snapshot(out))
    records = manifest_records(out / "manifest.jsonl")
    assert 2 < len(records) < 60 and assert_pngs_decode(out)
    with pytest.raises(IncompleteOutputError, match="is incomplete: its writer stopped"):
        SyntheticDataset(out)


def test_train_controlnet_refuses_a_disk_too_small_before_its_first_step(compose_world, world, tmp_path,
                                                                         monkeypatch):
    """Issue #33: the GPU check's SDXL line died at the final `last.ckpt` after its training step. The composed
    config (the user's overrides, checkpoint_every_n_steps above max_steps) stops before the first step."""
    from synthrel.controlnet.module import ControlNetModule

    def no_step(*args):
        raise AssertionError("a training step ran")

    monkeypatch.setattr(ControlNetModule, "training_step", no_step)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=10**5))
    artifacts = tmp_path / "artifacts"
    out = artifacts / "controlnet" / "sd15"
    with pytest.raises(DiskFullError, match=rf"output folder {out} \(checked before training\): needs 18\.\d\d MB \(\d+ bytes: 1 "
                                            r"checkpoint\(s\) at once x .*free 0\.10 MB \(100000 bytes\)"):
        run_stages(compose_world(artifacts, "+stage=[train_controlnet]", "backbone.resolution=64",
                                 "stages.train_controlnet.max_steps=1", "stages.train_controlnet.num_workers=0",
                                 "stages.train_controlnet.checkpoint_every_n_steps=100", "logger=none",
                                 f"stages.train_controlnet.captions={world}/captions_train.jsonl"))
    assert not (out / "checkpoints").exists() and not (out / "final").exists()
