"""OODDetectionJob: missing zoo results, and RbA on a tiny Road Anomaly layout against sklearn."""

import json
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
from ood_reference import genval_reference, rba_reference

from synthrel.data.io import write_jpg, write_png
from synthrel.errors import DatasetError
from synthrel.ood_detection.job import OODDetectionJob
from synthrel.ood_detection.rba import load_mask2former, rba_predict
from synthrel.tiny.mask2former import build_tiny_rba


def _tiny_rba(cfg):
    """The tiny profile's RbA checkpoint (the tiny_models stage writes it in a real run)."""
    build_tiny_rba(Path(cfg.profile.models_dir) / "rba_1dl")


def test_zoo_rows_need_finished_evaluations(tmp_path):
    """Named models without finished OOD results are an error naming the file; unnamed ones are skipped.
    (The rows themselves: tests/evaluation/test_ood_engine.py, from the evaluate stage to this table.)"""
    (tmp_path / "results" / "m1" / "road_anomaly").mkdir(parents=True)
    kwargs = dict(results_root=str(tmp_path / "results"), output_dir=str(tmp_path / "ood"), datasets=["road_anomaly"])
    assert OODDetectionJob(**kwargs).run()["n_rows"] == 0
    with pytest.raises(DatasetError, match=r"m1/road_anomaly/metrics.parquet .* evaluate m1 on road_anomaly"):
        OODDetectionJob(**kwargs, models=["m1"]).run()


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
    _tiny_rba(cfg)
    summary = hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all").run()
    table = pd.read_parquet(f"{summary['output_dir']}/ood_detection.parquet")
    values = table.set_index("metric")["value"]
    assert {"auroc_rba", "ap_rba", "fpr95_rba", "img_auroc_rba"} <= set(values.index)
    assert 0 <= values["auroc_rba"] <= 1 and table["n_images"].max() == 2
    # sklearn on RbA's scores of the same images (the score itself: test_rba_score_hand_worked)
    from omegaconf import OmegaConf

    model = load_mask2former(OmegaConf.to_container(cfg.stages.ood_detection.rba.models.rba_swin_b, resolve=True))
    dataset = hydra.utils.instantiate(cfg.datasets.road_anomaly)
    scores, oods = [], []
    for i in range(len(dataset)):
        scores.append(rba_predict(model, dataset[i]["image"][None])[0][0].numpy())
        oods.append(dataset[i]["ood"])
    ref = rba_reference(np.concatenate([s.ravel() for s in scores]), np.concatenate([o.ravel() for o in oods]))
    for m in ("auroc", "ap", "fpr95"):
        assert values[f"{m}_rba"] == pytest.approx(ref[m], abs=1e-9)
    per_image = [genval_reference(-s.ravel(), (o.ravel() == 1).astype(int)) for s, o in zip(scores, oods, strict=True)]
    for m in ("auroc", "fpr95", "aupr_in", "aupr_out"):
        assert values[f"img_{m}_rba"] == pytest.approx(np.mean([r[m] for r in per_image]), abs=1e-9)
    again = hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all")
    again._rba_evaluate = None  # a finished pair must not be evaluated again
    again.run()
    metrics_json = next(Path(summary["output_dir"]).glob("rba/*/road_anomaly/metrics.json"))
    metrics_json.write_text('{"pooled": {}, "per_image": []}')  # histogram-era metrics: evaluated again
    hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all").run()
    assert "rows" in json.loads(metrics_json.read_text())


def test_finetune_with_coco_paste_then_evaluate(tmp_path, compose_cfg, monkeypatch):
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
                      f"{ft}.enabled=true", f"{ft}.bases=[rba_swin_b]", f"{ft}.variants={{coco:{{outliers:coco}}}}",
                      f"{ft}.coco_root={tmp_path}/coco", f"{ft}.max_steps=2", f"{ft}.batch_size=2",
                      f"{ft}.crop_size=[32,48]", f"{ft}.min_sizes=[48]", f"{ft}.num_workers=0", f"{ft}.mix_prob=1.0")
    _tiny_rba(cfg)
    summary = hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all").run()
    assert set(summary["models"]) == {"rba_swin_b", "rba_swin_b+coco"}
    saved = list((tmp_path / "outputs").rglob("rba_finetuned/rba_swin_b+coco-s0/config.json"))
    assert len(saved) == 1
    # a record of an earlier version (it held num_workers) or other loader workers: the fine-tune is kept
    record = saved[0].parent / "finetune.json"
    settings = json.loads(record.read_text())
    assert "num_workers" not in settings  # loader workers do not shape the model
    record.write_text(json.dumps({**settings, "num_workers": 2}))
    cfg.stages.ood_detection.rba.finetune.num_workers = "auto"
    monkeypatch.setattr("pytorch_lightning.Trainer.fit", lambda *a, **k: pytest.fail("fine-tuned again"))
    hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all").run()


def test_coco_root_missing_is_a_clear_error(tmp_path):
    from synthrel.errors import DatasetError
    from synthrel.ood_detection.outliers import CocoObjects

    with pytest.raises(DatasetError, match="coco_root"):
        CocoObjects(tmp_path / "nowhere")


def test_rba_precision_is_recorded_and_a_change_scores_again(tmp_path, compose_cfg, monkeypatch):
    """A pair scored at one `rba.precision` is not skipped as done at another: its manifest entry names the
    precision (entries without one were scored in fp32, the only precision there was); a bad value names the key."""
    from synthrel.ood_detection.job import OODDetectionJob
    from synthrel.schemas import check_settings

    _road_anomaly(tmp_path / "RoadAnomaly", np.random.default_rng(1))
    args = ("+stage=[ood_detection]", "profile=tiny", f"datasets.road_anomaly.root={tmp_path}/RoadAnomaly",
            "stages.ood_detection.datasets=[road_anomaly]", "stages.ood_detection.zoo_scores=false",
            "~stages.ood_detection.rba.models.rba_swin_l")
    cfg = compose_cfg(*args)
    _tiny_rba(cfg)
    summary = hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all").run()
    manifest = Path(summary["output_dir"]) / "rba" / "manifest.jsonl"
    assert [json.loads(line)["precision"] for line in manifest.read_text().splitlines()] == ["fp32"]
    scored = []
    evaluate = OODDetectionJob._rba_evaluate
    monkeypatch.setattr(OODDetectionJob, "_rba_evaluate",
                        lambda self, *a, **k: (scored.append(self.rba.precision), evaluate(self, *a, **k)))
    hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all").run()
    assert scored == []  # same precision: skipped
    hydra.utils.instantiate(compose_cfg(*args, "stages.ood_detection.rba.precision=bf16").stages.ood_detection,
                            _convert_="all").run()
    assert scored == ["bf16"]
    assert json.loads(manifest.read_text().splitlines()[-1])["precision"] == "bf16"
    problems = check_settings(OODDetectionJob, {"rba": {"precision": "fp16"}}, "stages.ood_detection")
    assert any("stages.ood_detection.rba.precision" in p and "bf16" in p for p in problems), problems
