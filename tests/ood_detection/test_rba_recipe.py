"""RbA's fine-tune recipe (spec S11, RbA's ckpts/swin_b_1dl_rba_ood_coco/config.yaml) against references written
here: multi-scale resize + crop sizes, flip, WarmupPolyLR, the frozen parts, the squared hinge; the "not run"
cells of Table 2."""

from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import torch

from synthrel.conventions import OOD_LABEL_ID
from synthrel.data.base import Item
from synthrel.errors import DatasetError
from synthrel.ood_detection.outliers import ItemSubset, OutlierMixDataset, resize_shortest_edge
from synthrel.ood_detection.rba import (
    TRAINABLE_PREFIXES,
    RbAFineTuner,
    outlier_hinge_loss,
    warmup_poly_factor,
)
from synthrel.tiny.mask2former import build_tiny_rba


class Scenes:
    """Inliers (or synthetic outliers with `ood`): labels rise by one every 16 columns (mod 19), so a flip shows."""

    def __init__(self, n=3, h=128, w=256, ood=False):
        self.items = [Item(f"s{i}", Path(f"s{i}.png")) for i in range(n)]
        self.h, self.w, self.ood, self.root = h, w, ood, Path(".")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        cols = np.broadcast_to((np.arange(self.w) // 16) % 19, (self.h, self.w)).astype(np.uint8)
        image = np.stack([cols * 10, cols * 10, np.full_like(cols, i)], -1).astype(np.uint8)
        sample = {"image": image, "label": cols.copy(), "id": self.items[i].id}
        if self.ood:
            mask = np.zeros((self.h, self.w), np.uint8)
            mask[40:60, 100:140] = 1
            sample["ood"] = mask
        return sample


def test_resize_shortest_edge_matches_detectron2_formula():
    for (h, w), short, max_size in (((1024, 2048), 614, 4096), ((1024, 2048), 2048, 4096), ((100, 300), 128, 256)):
        image, label = np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)
        # detectron2 ResizeShortestEdge.get_output_shape
        scale = short / min(h, w)
        newh, neww = (short, scale * w) if h < w else (scale * h, short)
        if max(newh, neww) > max_size:
            newh, neww = newh * max_size / max(newh, neww), neww * max_size / max(newh, neww)
        out_image, out_label = resize_shortest_edge(image, label, short, max_size)
        assert out_label.shape == (int(newh + 0.5), int(neww + 0.5)) == out_image.shape[:2]


def test_crops_have_the_recipe_size_and_labels_follow_the_image():
    data = OutlierMixDataset(Scenes(), mix_prob=0.0, num_samples=24, crop_size=(64, 128), min_sizes=(96, 128, 160),
                             max_size=512, color_aug=False)
    flipped = 0
    for i in range(len(data)):
        s = data[i]
        assert s["image"].shape == (64, 128, 3) and s["label"].shape == (64, 128)
        step = np.diff(s["label"].astype(int), axis=1)
        steps = set(step[(step != 0) & (np.abs(step) < 5)].tolist())
        assert steps in ({1}, {-1}, set())  # every row the same way: image and label flipped together
        flipped += steps == {-1}
        # the image (first channel 10 x label, bilinear) follows the label (nearest) away from the edges
        same = (s["label"][:, 1:-1] == s["label"][:, :-2]) & (s["label"][:, 1:-1] == s["label"][:, 2:])
        np.testing.assert_allclose(s["image"][:, 1:-1, 0][same], 10 * s["label"][:, 1:-1][same], atol=1)
    assert 0 < flipped < len(data)  # horizontal flip with probability 1/2


def test_color_aug_changes_pixels_not_labels():
    plain = OutlierMixDataset(Scenes(), mix_prob=0.0, num_samples=8, color_aug=False, flip=False)
    ssd = OutlierMixDataset(Scenes(), mix_prob=0.0, num_samples=8, color_aug=True, flip=False)
    changed = 0
    for i in range(8):
        a, b = plain[i], ssd[i]
        np.testing.assert_array_equal(a["label"], b["label"])
        assert b["image"].dtype == np.uint8 and b["image"].shape == a["image"].shape
        changed += not np.array_equal(a["image"], b["image"])
    assert changed > 0


@pytest.mark.parametrize("mode", ["whole_image", "cut_paste"])
def test_synthetic_modes(mode):
    data = OutlierMixDataset(Scenes(), Scenes(ood=True), mix_prob=1.0, num_samples=4, color_aug=False, flip=False,
                             synthetic_mode=mode)
    s = data[0]
    ood = s["label"] == OOD_LABEL_ID
    assert s["outlier_mask"][ood].tolist() == [1] * int(ood.sum()) and (s["outlier_mask"][~ood] == 0).all()
    if mode == "whole_image":
        assert ood.sum() == 20 * 40 and ood[40:60, 100:140].all()  # the inpainted image with its own mask
    else:
        assert ood.sum() == 20 * 40  # the object cut out and pasted somewhere


def test_curated_subset_names_unknown_ids():
    scenes = Scenes()
    assert len(ItemSubset(scenes, ["s2", "s0"])) == 2
    with pytest.raises(DatasetError, match="curated.txt: 1 id"):
        ItemSubset(scenes, ["s0", "zebra_7"], "curated.txt")


def test_warmup_poly_lr_against_reference():
    def reference(it, max_iter, power, warmup_iters, warmup_factor):  # detectron2 WarmupPolyLR.get_lr
        warm = 1.0 if it >= warmup_iters else warmup_factor * (1 - it / warmup_iters) + it / warmup_iters
        return warm * (1 - it / max_iter) ** power

    for it in (0, 1, 5, 999, 1999):
        assert warmup_poly_factor(it, 2000) == pytest.approx(reference(it, 2000, 0.9, 0, 1.0), rel=1e-12)
        assert warmup_poly_factor(it, 2000, 0.9, 10, 0.001) == pytest.approx(reference(it, 2000, 0.9, 10, 0.001))


@pytest.fixture(scope="module")
def tiny_rba(tmp_path_factory):
    folder = build_tiny_rba(tmp_path_factory.mktemp("models") / "rba_1dl")
    return {"checkpoint": str(folder / "model_final.pth"), "arch": str(folder / "arch.json")}


def test_one_step_changes_only_the_mlps_and_follows_the_schedule(tiny_rba):
    module = RbAFineTuner(tiny_rba, lr=1e-3, max_steps=4)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    data = OutlierMixDataset(Scenes(ood=True), mix_prob=0.0, num_samples=2, crop_size=(64, 128), color_aug=False)
    from synthrel.ood_detection.outliers import collate_outliers

    batch = collate_outliers([data[0], data[1]])
    batch["label"][:, :8, :8] = OOD_LABEL_ID
    batch["outlier_mask"][:, :8, :8] = 1
    opt = module.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        module.losses(batch)["loss"].backward()
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1e-3 * (1 - it / 4) ** 0.9 for it in range(3)], rel=1e-12)
    after = module.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert all(k.startswith(TRAINABLE_PREFIXES) for k in trainable)
    assert any("class_predictor" in k for k in changed) and any("mask_embedder" in k for k in changed)


def test_precision_auto_is_rbas_amp_on_a_gpu():
    """RbA's config trains with SOLVER.AMP.ENABLED: true; fp16 autocast is a GPU feature, so the CPU keeps fp32."""
    from synthrel.ood_detection.job import FinetuneSettings, finetune_precision

    assert FinetuneSettings().precision == "auto"
    assert finetune_precision("auto", torch.device("cuda", 1)) == "16-mixed"
    assert finetune_precision("auto", "cpu") == "32-true"
    assert finetune_precision("32-true", "cuda") == "32-true"


def test_the_losses_under_fp16_autocast_stay_near_fp32(tiny_rba):
    """The loss that 16-mixed trains on: finite and within fp16 rounding of the fp32 loss on the same batch."""
    module = RbAFineTuner(tiny_rba, max_steps=4)
    data = OutlierMixDataset(Scenes(ood=True), mix_prob=0.0, num_samples=2, crop_size=(64, 128), color_aug=False)
    from synthrel.ood_detection.outliers import collate_outliers

    batch = collate_outliers([data[0], data[1]])
    batch["label"][:, :8, :8] = OOD_LABEL_ID
    batch["outlier_mask"][:, :8, :8] = 1
    torch.manual_seed(0)
    fp32 = module.losses(batch)["loss"]
    torch.manual_seed(0)  # the same point samples
    with torch.autocast("cpu", dtype=torch.float16):
        fp16 = module.losses(batch)["loss"]
    assert torch.isfinite(fp16) and fp16.item() == pytest.approx(fp32.item(), rel=2e-2)


def test_squared_hinge_against_float64_loop():
    g = torch.Generator().manual_seed(0)
    score = torch.randn(2, 7, 9, generator=g) * 4
    mask = torch.randint(0, 3, (2, 7, 9), generator=g)
    mask[mask == 2] = 255
    s, m = score.double().flatten().tolist(), mask.flatten().tolist()
    inl = [max(0.0, v - 0.0) ** 2 for v, k in zip(s, m, strict=True) if k == 0]
    out = [max(0.0, 5.0 - v) ** 2 for v, k in zip(s, m, strict=True) if k == 1]
    ref = 0.5 * (sum(inl) / len(inl) + sum(out) / len(out))
    assert outlier_hinge_loss(score, mask).item() == pytest.approx(ref, rel=1e-6)


def test_table2_not_run_cells(tmp_path, compose_cfg):
    from synthrel.data.io import write_jpg, write_png

    rng = np.random.default_rng(0)
    write_jpg(tmp_path / "RA/frames/f0.jpg", rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    label = np.zeros((40, 56), np.uint8)
    label[10:20, 20:30] = 2
    write_png(tmp_path / "RA/frames/f0.labels/labels_semantic.png", label)
    cfg = compose_cfg("+stage=[ood_detection]", "profile=tiny", f"datasets.road_anomaly.root={tmp_path}/RA",
                      f"datasets.smiyc_ra21.root={tmp_path}/nowhere", f"datasets.ood_objects.root={tmp_path}/none",
                      "stages.ood_detection.datasets=[road_anomaly,smiyc_ra21]", "stages.ood_detection.zoo_scores=false",
                      "stages.ood_detection.rba.finetune.enabled=true",
                      "stages.ood_detection.rba.finetune.bases=[rba_swin_b]", "~stages.ood_detection.rba.models.rba_swin_l",
                      f"stages.ood_detection.report_dir={tmp_path}/analysis")
    build_tiny_rba(Path(cfg.profile.models_dir) / "rba_1dl")
    summary = hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all").run()
    table = pd.read_csv(Path(summary["output_dir"]) / "table2.csv").set_index("model")
    base = table.loc["RbA (Swin-B), no OE"]
    assert 0 <= float(base["road_anomaly AUROC"]) <= 100 and float(base["paper AUROC"]) == 95.6
    assert base["smiyc_ra21 AP"] == "not run: smiyc_ra21 not present"
    assert (table.loc["RbA (Swin-B) + COCO data"].iloc[:6] == "not run: COCO not given").all()
    assert table.loc["RbA (Swin-B) + Ours (all)", "road_anomaly FPR95"] == "not run: ood_objects not present"
    assert (tmp_path / "analysis/table2.md").is_file()
    assert "Table 2" in (tmp_path / "analysis/ood_outputs.json").read_text()
