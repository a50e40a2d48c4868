"""Inputs that used to give a plausible wrong number and exit 0 now stop through the CLI, naming the file or model,
and write no DONE (docs/reliability.md, issue #24 item 2)."""

from __future__ import annotations

import shutil

import numpy as np
import torch
from PIL import Image
from reliability_utils import EVALUATE, run_cli, stage_overrides

from synthrel.conventions import label_ids_to_train_ids

ONE_DEMO = [*EVALUATE, "stages.evaluate.models=[pspnet_r18]", "stages.evaluate.datasets=[demo]"]


def _demo_copy(world, tmp_path):
    source = world / "outputs" / "tiny" / "data" / "cityscapes"
    root = tmp_path / "cs"
    for sub in ("leftImg8bit", "gtFine"):
        shutil.copytree(source / sub / "val", root / sub / "val")
    return root


def _evaluate(world, tmp_path, root, *extra):
    artifacts = tmp_path / "artifacts"
    proc = run_cli([*stage_overrides(world, artifacts, ONE_DEMO), f"datasets.demo.root={root}", *extra], cwd=tmp_path)
    return proc, artifacts / "results" / "tiny" / "pspnet_r18" / "demo"


def test_train_ids_saved_under_the_label_ids_name_are_refused(world, tmp_path):
    root = _demo_copy(world, tmp_path)
    for path in root.rglob("*_gtFine_labelIds.png"):  # what a user converting labels by hand writes
        Image.fromarray(label_ids_to_train_ids(np.asarray(Image.open(path)))).save(path)
    proc, pair = _evaluate(world, tmp_path, root)
    assert proc.returncode != 0
    assert "look like trainIds saved under the raw-id file name" in proc.stderr
    assert "stages.evaluate.label_check=false" in proc.stderr
    assert not (pair / "DONE").exists()
    proc, pair = _evaluate(world, tmp_path, root, "stages.evaluate.label_check=false")  # the user means it
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (pair / "DONE").exists()


def test_labels_without_an_evaluable_pixel_are_refused(world, tmp_path):
    root = _demo_copy(world, tmp_path)
    for path in root.rglob("*_gtFine_labelIds.png"):
        Image.fromarray(np.full_like(np.asarray(Image.open(path)), 4)).save(path)  # 4 'static': void
    proc, pair = _evaluate(world, tmp_path, root, "stages.evaluate.label_check=false")
    assert proc.returncode != 0
    assert f"dataset 'demo' under {root}: no label holds an evaluable pixel" in proc.stderr
    assert not (pair / "DONE").exists() and not (pair / "metrics.parquet").exists()


def test_a_checkpoint_with_nan_weights_fails_naming_the_model(world, tmp_path):
    folder = tmp_path / "nan_model"
    shutil.copytree(world / "outputs" / "tiny" / "models" / "zoo" / "pspnet_r18", folder)
    state = torch.load(folder / "checkpoint.pth", weights_only=False)
    weight = next(k for k in state["state_dict"] if k.endswith("conv_seg.weight"))
    state["state_dict"][weight][0] = float("nan")
    torch.save(state, folder / "checkpoint.pth")
    proc, pair = _evaluate(world, tmp_path, _demo_copy(world, tmp_path),
                           f"zoo.models.pspnet_r18.checkpoint={folder}/checkpoint.pth")
    assert proc.returncode != 0
    assert "model 'pspnet_r18' gave non-finite logits (NaN or inf)" in proc.stderr
    assert "Nothing was written" in proc.stderr
    assert not (pair / "DONE").exists() and not (pair / "metrics.parquet").exists()
