"""OODDetectionJob on engine-format histograms written by the test, and RbA on a tiny Road Anomaly layout."""

import hydra
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import auc, average_precision_score, roc_auc_score, roc_curve

from synthrel.data.io import write_jpg, write_png
from synthrel.ood_detection.job import OODDetectionJob


def _engine_hist(conf_per_image, ood_per_image, n_bins=10000, image_bins=100):
    """ood_hist.npz arrays as the engine writes them, for a single score (msp, range [0, 1], high = ID)."""
    pooled = np.zeros((1, 2, n_bins), np.int64)
    per_image = np.zeros((len(conf_per_image), 1, 2, image_bins), np.int64)
    for i, (conf, ood) in enumerate(zip(conf_per_image, ood_per_image, strict=True)):
        for bins, target in ((n_bins, pooled[0]), (image_bins, per_image[i, 0])):
            idx = np.minimum((conf * bins).astype(int), bins - 1)
            np.add.at(target, (ood, idx), 1)
    return dict(pooled=pooled, per_image=per_image, scores=np.array(["msp"]), ranges=np.array([[0.0, 1.0]]),
                high_is_id=np.array([True]), image_ids=np.array([f"im{i}" for i in range(len(conf_per_image))]))


def test_zoo_metrics_from_histograms_equal_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    confs, oods = [], []
    for _ in range(5):
        ood = (rng.random(500) < 0.2).astype(int)
        level = np.clip(rng.normal(60 - 25 * ood, 15).astype(int), 0, 99)  # 100 distinct confidence levels
        confs.append((level + 0.5) / 100)
        oods.append(ood)
    folder = tmp_path / "results" / "m1" / "road_anomaly"
    folder.mkdir(parents=True)
    np.savez(folder / "ood_hist.npz", **_engine_hist(confs, oods))
    job = OODDetectionJob(results_root=str(tmp_path / "results"), output_dir=str(tmp_path / "ood"),
                          datasets=["road_anomaly"])
    job.run()
    table = pd.read_parquet(tmp_path / "ood" / "ood_detection.parquet").set_index("metric")["value"]
    y, s = np.concatenate(oods), -np.concatenate(confs)
    fpr, tpr, _ = roc_curve(y, s)
    assert table["auroc_msp"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert table["ap_msp"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert table["fpr95_msp"] == pytest.approx(fpr[np.argmax(tpr > 0.95)], abs=1e-12)
    per_image = []
    for conf, ood in zip(confs, oods, strict=True):
        f, t, _ = roc_curve(ood, -conf)
        per_image.append((auc(f, t), f[np.argmax(t >= 0.95)]))
    assert table["img_auroc_msp"] == pytest.approx(np.mean([a for a, _ in per_image]), abs=1e-12)
    assert table["img_fpr95_msp"] == pytest.approx(np.mean([b for _, b in per_image]), abs=1e-12)


def _road_anomaly(root, rng, n=2):
    for i in range(n):
        write_jpg(root / "frames" / f"f{i}.jpg", rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
        label = np.zeros((40, 56), np.uint8)
        label[10:20, 20:30] = 2
        write_png(root / "frames" / f"f{i}.labels" / "labels_semantic.png", label)


def test_rba_evaluation_on_tiny_mask2former_and_resume(tmp_path, compose_cfg):
    _road_anomaly(tmp_path / "RoadAnomaly", np.random.default_rng(1))
    cfg = compose_cfg("+stage=[ood_detection]", "profile=tiny", f"datasets.road_anomaly.root={tmp_path}/RoadAnomaly",
                      "stages.ood_detection.datasets=[road_anomaly]", "stages.ood_detection.zoo_scores=false",
                      "~stages.ood_detection.rba.models.rba_swin_l")
    summary = hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all").run()
    table = pd.read_parquet(f"{summary['output_dir']}/ood_detection.parquet")
    values = table.set_index("metric")["value"]
    assert {"auroc_rba", "ap_rba", "fpr95_rba", "img_auroc_rba"} <= set(values.index)
    assert 0 <= values["auroc_rba"] <= 1 and table["n_images"].max() == 2
    assert values["auroc_rba"] == pytest.approx(values["img_auroc_rba"], abs=0.3)  # same images, same model
    again = hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all")
    again._rba_evaluate = None  # a finished pair must not be evaluated again
    again.run()


def test_finetune_with_coco_paste_then_evaluate(tmp_path, compose_cfg):
    rng = np.random.default_rng(2)
    _road_anomaly(tmp_path / "RoadAnomaly", rng, n=1)
    for i in range(2):
        name = f"aachen_000000_00000{i}"
        write_png(tmp_path / f"cs/leftImg8bit/train/aachen/{name}_leftImg8bit.png",
                  rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        write_png(tmp_path / f"cs/gtFine/train/aachen/{name}_gtFine_labelIds.png",
                  rng.choice(np.array([7, 26], np.uint8), (48, 64)))
    write_jpg(tmp_path / "coco/images/obj.jpg", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 255
    write_png(tmp_path / "coco/masks/obj.png", mask)
    ft = "stages.ood_detection.rba.finetune"
    cfg = compose_cfg("+stage=[ood_detection]", "profile=tiny", f"datasets.road_anomaly.root={tmp_path}/RoadAnomaly",
                      f"datasets.cityscapes.root={tmp_path}/cs", "stages.ood_detection.datasets=[road_anomaly]",
                      "stages.ood_detection.zoo_scores=false", "~stages.ood_detection.rba.models.rba_swin_l",
                      f"{ft}.enabled=true", f"{ft}.outliers=coco", f"{ft}.coco_root={tmp_path}/coco",
                      f"{ft}.max_steps=2", f"{ft}.batch_size=2", f"{ft}.crop_size=[32,48]", f"{ft}.num_workers=0",
                      f"{ft}.mix_prob=1.0")
    summary = hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all").run()
    assert set(summary["models"]) == {"rba_swin_b", "rba_swin_b+coco"}
    saved = list((tmp_path / "outputs").rglob("rba_finetuned/rba_swin_b+coco-s0/config.json"))
    assert len(saved) == 1


def test_coco_root_missing_is_a_clear_error(tmp_path):
    from synthrel.errors import DatasetError
    from synthrel.ood_detection.outliers import CocoObjects

    with pytest.raises(DatasetError, match="coco_root"):
        CocoObjects(tmp_path / "nowhere")
