"""Inputs that used to give a plausible wrong number and exit 0 now stop through the CLI, naming the file or model,
and write no DONE (docs/reliability.md, issue #24 item 2)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch
from PIL import Image
from reliability_utils import EVALUATE, GENERATE, run_cli, stage_overrides

from synthrel.conventions import label_ids_to_train_ids

ONE_DEMO = [*EVALUATE, "stages.evaluate.models=[pspnet_r18]", "stages.evaluate.datasets=[demo]"]


def _evaluate(world, tmp_path, root, *extra):
    artifacts = tmp_path / "artifacts"
    proc = run_cli([*stage_overrides(world, artifacts, ONE_DEMO), f"datasets.demo.root={root}", *extra], cwd=tmp_path)
    return proc, artifacts / "results" / "tiny" / "pspnet_r18" / "demo"


def test_train_ids_saved_under_the_label_ids_name_are_refused(world, tmp_path, demo_copy):
    root = demo_copy
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


def test_labels_without_an_evaluable_pixel_are_refused(world, tmp_path, demo_copy):
    root = demo_copy
    for path in root.rglob("*_gtFine_labelIds.png"):
        Image.fromarray(np.full_like(np.asarray(Image.open(path)), 4)).save(path)  # 4 'static': void
    proc, pair = _evaluate(world, tmp_path, root, "stages.evaluate.label_check=false")
    assert proc.returncode != 0
    assert f"dataset 'demo' under {root}: no label holds an evaluable pixel" in proc.stderr
    assert not (pair / "DONE").exists() and not (pair / "metrics.parquet").exists()


def test_a_checkpoint_with_nan_weights_fails_naming_the_model(world, tmp_path, demo_copy):
    folder = tmp_path / "nan_model"
    shutil.copytree(world / "outputs" / "tiny" / "models" / "zoo" / "pspnet_r18", folder)
    state = torch.load(folder / "checkpoint.pth", weights_only=False)
    weight = next(k for k in state["state_dict"] if k.endswith("conv_seg.weight"))
    state["state_dict"][weight][0] = float("nan")
    torch.save(state, folder / "checkpoint.pth")
    proc, pair = _evaluate(world, tmp_path, demo_copy,
                           f"zoo.models.pspnet_r18.checkpoint={folder}/checkpoint.pth")
    assert proc.returncode != 0
    assert "model 'pspnet_r18' gave non-finite logits (NaN or inf)" in proc.stderr
    assert "Nothing was written" in proc.stderr
    assert not (pair / "DONE").exists() and not (pair / "metrics.parquet").exists()


def test_a_pooled_domain_of_non_ascii_words_writes_every_item(world, tmp_path):
    """'雪' and '雨' both slugified to '' and the second item of each index overwrote the first."""
    artifacts = tmp_path / "artifacts"
    generate = [o for o in GENERATE if not o.startswith(("domain=", "profile.num_samples"))]
    proc = run_cli([*stage_overrides(world, artifacts, generate), "domain=custom", "domain.name='雪雨'",
                    "domain.domains=['雪','雨']", "domain.pooled=true", "profile.samples_per_domain_all=2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = artifacts / "synthetic" / "sd15" / "雪雨"
    images = sorted((root / "leftImg8bit").rglob("*_leftImg8bit.png"))
    records = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    assert len(images) == len(records) == len({r["id"] for r in records}) == 4
    assert {r["prompt"].rsplit(", in ", 1)[1] for r in records} == {"雪", "雨"}
