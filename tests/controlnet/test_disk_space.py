"""train_controlnet checks before its first step that its checkpoints and final ControlNet fit on the disk."""

import shutil
from collections import namedtuple

import pytest
from diffusers import ControlNetModel

from synthrel.controlnet.job import TrainControlNetJob, disk_need
from synthrel.controlnet.module import ControlNetModule
from synthrel.jobs import DiskFullError

Usage = namedtuple("Usage", "total used free")


def make_job(models, data, out, kind="sd15", **overrides):
    settings = dict(
        backbone={"name": kind, "pretrained": str(models[kind]), "resolution": 32,
                  "train": {"max_steps": 2, "batch_size": 2, "accumulate_grad_batches": 1, "lr": 1e-4}},
        dataset={"_target_": "synthrel.data.cityscapes.CityscapesDataset", "root": str(data["root"]),
                 "split": "train"},
        captions=str(data["captions"]), output_dir=str(out), run_dir=str(out / "run"), device="cpu",
        num_workers=0, checkpoint_every_n_steps=1, sample_every_n_steps=0,
    )
    return TrainControlNetJob(**{**settings, **overrides})


def count_steps(monkeypatch) -> list:
    steps = []
    original = ControlNetModule.training_step

    def training_step(self, batch, batch_idx):
        steps.append(batch_idx)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ControlNetModule, "training_step", training_step)
    return steps


def test_a_disk_too_small_stops_the_stage_before_its_first_step(tiny_models, tiny_cityscapes, tmp_path, monkeypatch):
    out = tmp_path / "out"
    steps = count_steps(monkeypatch)
    real = shutil.disk_usage
    seen = []

    def disk_usage(path):
        seen.append(str(path))
        return Usage(real(path).total, real(path).used, 5000)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    with pytest.raises(DiskFullError) as caught:
        make_job(tiny_models, tiny_cityscapes, out).run()
    message = str(caught.value)
    assert caught.value.errno == 28
    assert f"output folder {out} (checked before training)" in message, message
    assert "free 0.01 MB (5000 bytes)" in message and "3 checkpoint(s) at once x" in message, message
    assert "AdamW moments" in message and "final ControlNet" in message, message
    assert "`stages.train_controlnet.output_dir`" in message and "keep_checkpoints=0" in message, message
    assert "checkpoint_every_n_steps" in message, message
    assert steps == [] and not (out / "checkpoints").exists() and not (out / "final").exists()
    assert seen and all(s.startswith(str(tmp_path)) for s in seen)


def folder_bytes(folder) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_the_estimate_bounds_what_a_tiny_run_writes(tiny_models, tiny_cityscapes, tmp_path, monkeypatch, kind):
    """With room the run trains as before; its last.ckpt and final/ are each <= the estimate and >= 0.8 of it, and
    checkpoints/ ends with the count the estimate keeps (one periodic checkpoint and last.ckpt)."""
    out = tmp_path / "out"
    steps = count_steps(monkeypatch)
    summary = make_job(tiny_models, tiny_cityscapes, out, kind=kind).run()
    assert summary["global_step"] == 2 and len(steps) == 2
    need = disk_need(ControlNetModel.from_pretrained(out / "final"), max_steps=2, checkpoint_every_n_steps=1,
                     keep_checkpoints=1, checkpoint_dir=tmp_path / "none")
    checkpoint = (out / "checkpoints" / "last.ckpt").stat().st_size
    final = sum(f.stat().st_size for f in (out / "final").iterdir() if f.name != "training.json")
    assert checkpoint <= need.checkpoint <= 1.25 * checkpoint, (checkpoint, need)
    assert final <= need.final <= 1.25 * final, (final, need)
    assert len(list((out / "checkpoints").glob("*.ckpt"))) == need.kept == 2 and need.at_once == 3
    assert folder_bytes(out / "checkpoints") + folder_bytes(out / "final") <= need.total


def test_the_sdxl_gpu_check_line_is_refused_on_the_disk_it_died_on(tmp_path, monkeypatch):
    """The real-size SDXL ControlNet (1251.01 M parameters, built on `meta`): one checkpoint is 1251.01 M x 4 bytes
    x (weights + 2 AdamW moments) = 15.01 GB, final/ 5.00 GB; the gpu_check line (max_steps 1, a checkpoint every
    100 steps) writes only last.ckpt, then final/ beside it: 20.0 GB, more than the 11 GB that were free (the
    margin for the files' format: under 0.1 %)."""
    import torch
    from diffusers import UNet2DConditionModel

    from synthrel.controlnet.job import check_disk_space
    from synthrel.tiny.real_configs import UNETS

    with torch.device("meta"):
        controlnet = ControlNetModel.from_unet(UNet2DConditionModel(**UNETS["sdxl"]), conditioning_channels=1)
    params = 1251.01e6
    need = disk_need(controlnet, max_steps=1, checkpoint_every_n_steps=100, keep_checkpoints=1,
                     checkpoint_dir=tmp_path / "checkpoints")
    assert need.checkpoint == pytest.approx(params * 4 * 3, rel=1e-3)
    assert need.final == pytest.approx(params * 4, rel=1e-3)
    assert need.at_once == 1 and need.total == pytest.approx(params * 4 * 4, rel=1e-3)
    paper = disk_need(controlnet, max_steps=20000, checkpoint_every_n_steps=100, keep_checkpoints=1,
                      checkpoint_dir=tmp_path / "checkpoints")  # step file, last.ckpt and the one being written
    assert paper.total == pytest.approx(3 * params * 4 * 3, rel=1e-3)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(64 * 2**30, 53 * 2**30, 11 * 10**9))
    with pytest.raises(DiskFullError, match=r"needs 20\.02 GB .*1 checkpoint\(s\) at once x 15\.02 GB \(ControlNet "
                                            r"weights 5\.00 GB \+ AdamW moments 10\.01 GB .*final ControlNet 5\.01 GB"
                                            r"\), free 11\.00 GB"):
        check_disk_space(need, tmp_path / "out")


def test_preflight_shows_the_stages_count_and_flags_a_disk_too_small(tiny_models, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from synthrel.diffusion_loading import load_base_pipeline
    from synthrel.preflight.report import disk_estimates

    def cfg(pretrained):
        return OmegaConf.create({"backbone": {"pretrained": pretrained}, "stages": {"train_controlnet": {
            "output_dir": str(tmp_path / "out"), "conditioning": "label_id", "max_steps": 2,
            "checkpoint_every_n_steps": 1, "keep_checkpoints": 1}}})

    unet = load_base_pipeline(str(tiny_models["sd15"])).components["unet"]
    need = disk_need(ControlNetModel.from_unet(unet, conditioning_channels=1), max_steps=2,
                     checkpoint_every_n_steps=1, keep_checkpoints=1, checkpoint_dir=tmp_path / "out" / "checkpoints")
    text = disk_estimates(cfg(str(tiny_models["sd15"])), ["train_controlnet"])["train_controlnet"]
    assert text.startswith(f"{need.total / 1e6:.2f} MB under {tmp_path / 'out'} (3 checkpoint(s) at once"), text
    assert "NOT ENOUGH" not in text
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=10**6))
    assert "1.00 MB free -- NOT ENOUGH: the stage will stop before its first step" in disk_estimates(
        cfg(str(tiny_models["sd15"])), ["train_controlnet"])["train_controlnet"]
    assert disk_estimates(cfg(str(tmp_path / "not_built")), ["train_controlnet"])["train_controlnet"].startswith(
        "unknown until the base model's UNet config is on disk")
    assert disk_estimates(cfg(str(tiny_models["sd15"])), ["generate"]) == {}
