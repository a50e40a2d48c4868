"""Exact OOD metrics through the one-pass engine and the evaluate stage, against sklearn (GenVal per image, RbA
pooled) on scores computed in the test: adversarial logits through a stub model, then the tiny profile's evaluate
stage on the demo Road Anomaly set (metrics.parquet and the ood_detection table)."""

from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import torch
from ood_reference import genval_reference, rba_reference
from scipy.special import log_softmax, softmax

from synthrel.analysis.report import ReportJob
from synthrel.data.demo import DemoDataJob
from synthrel.evaluation import engine
from synthrel.evaluation.engine import OOD_SCORES, evaluate_dataset
from synthrel.evaluation.results import metric_rows
from synthrel.metrics.ood import IMAGE_METRICS, POOLED_METRICS
from synthrel.tiny.segmentation import ensure_tiny_segmenter
from synthrel.zoo.predictor import build_segmenter
from synthrel.zoo.registry import get_entry

N_CLASSES = 19


class _StubSegmenter:
    """Returns fixed logits per image; the image's first byte is its index."""

    device = torch.device("cpu")

    def __init__(self, logits: list[np.ndarray]):
        self.table = logits

    def logits_and_features(self, images, features=None):
        index = images[:, 0, 0, 0].long().tolist()
        return torch.from_numpy(np.stack([self.table[i] for i in index])), None


class _Set(torch.utils.data.Dataset):
    def __init__(self, oods: list[np.ndarray]):
        self.oods = oods

    def __len__(self):
        return len(self.oods)

    def __getitem__(self, i):
        image = np.zeros((*self.oods[i].shape, 3), np.uint8)
        image[0, 0, 0] = i
        return {"id": f"im{i}", "image": image, "label": None, "ood": self.oods[i]}


def _adversarial_images(rng):
    """(logits (19, H, W) float32, ood (H, W)) per image: confident logits (margins 10-50, max softmax 1.0 in
    float32), tied classes and tied pixels, void, classes never predicted, no OOD, only OOD (+ void), two sizes."""
    images = []
    for i in range(7):
        h, w = (12, 20) if i < 5 else (10, 8)
        logits = rng.normal(size=(N_CLASSES, h, w)).astype(np.float32)
        top = rng.integers(0, 3, (h, w))  # classes 3-18 never predicted
        margin = rng.uniform(10, 50, (h, w)).astype(np.float32)
        ood = rng.choice(np.array([0, 1, 255], np.uint8), (h, w), p=[0.6, 0.3, 0.1])
        margin[ood == 1] *= 0.4
        np.put_along_axis(logits, top[None], np.take_along_axis(logits, top[None], 0) + margin, 0)
        logits[:, :2, :] = np.round(logits[:, :2, :])  # tied pixels
        logits[:4, 2, :] = 30.0  # tied top classes
        if i == 2:
            ood[ood == 1] = 0  # no OOD pixel
        if i == 3:
            ood[ood == 0] = 1  # only OOD (and void): no ID pixel for RbA, void is ID for GenVal
        if i == 4:
            ood[:] = 1  # only OOD for both conventions
        images.append((logits, ood))
    return images


def test_engine_ood_metrics_on_adversarial_images_equal_sklearn():
    images = _adversarial_images(np.random.default_rng(0))
    seg = _StubSegmenter([z for z, _ in images])
    out = evaluate_dataset(seg, _Set([o for _, o in images]), batch_size=3, calib_pixels_per_image=0,
                           features=None)
    assert (out.ood["per_image"].shape, out.image_ids) == ((7, 3, 4), [f"im{i}" for i in range(7)])
    # scores: max logit exactly in float32 from numpy; confidence and entropy from the engine's float32
    # formulas (checked against scipy / 40-digit arithmetic in test_accumulation), saturated as the model gives them
    scores = {name: [] for name in OOD_SCORES}
    for z, _ in images:
        _, conf, max_logit, entropy = engine.class_scores(torch.from_numpy(z)[None])
        assert np.array_equal(max_logit[0].numpy(), z.max(0))
        scores["msp"].append(-conf[0].numpy())
        scores["max_logit"].append(-z.max(0))
        scores["entropy"].append(entropy[0].numpy())
    assert (scores["msp"][0] == -1.0).mean() > 0.3  # saturated confidence: heavy ties
    for s, name in enumerate(OOD_SCORES):
        for i, (_, ood) in enumerate(images):
            mask = (ood.ravel() == 1).astype(int)
            if mask.all() or not mask.any():
                assert np.isnan(out.ood["per_image"][i, s]).all()
                continue
            ref = genval_reference(-scores[name][i].ravel(), mask)
            np.testing.assert_allclose(out.ood["per_image"][i, s], [ref[m] for m in IMAGE_METRICS], atol=1e-9)
        ref = rba_reference(np.concatenate([x.ravel() for x in scores[name]]),
                            np.concatenate([o.ravel() for _, o in images]))
        assert out.ood["pooled"][name] == pytest.approx(ref, abs=1e-9)
    rows = metric_rows(out, {"model": "stub"}).set_index("metric")
    assert rows.loc["n_images_without_ood", "value"] == 1 and rows.loc["n_images_only_ood", "value"] == 1
    assert rows.loc["img_auroc_msp", "n_images"] == 5  # image 3 counts: its void pixels are ID for GenVal
    np.testing.assert_allclose(rows.loc["img_fpr95_entropy", "value"],
                               np.nanmean(out.ood["per_image"][:, 2, 1]), rtol=1e-12)


def test_eager_and_compiled_statistics_write_the_same_ood_rows(monkeypatch):
    """`stages.evaluate.compile` does not change the OOD rows (issue #34): the eager and the compiled per-batch
    statistics take max softmax and entropy from one function (`softmax_scores`), so on confident adversarial
    logits (a third of the pixels saturated at 1.0) they write the same MSP, entropy and max-logit rows, bit for
    bit. Compiled with the aot_eager backend (dynamo's graph, ATen kernels): inductor's fused exp may round a
    last bit differently, which is the only difference left on the GPU."""
    images = _adversarial_images(np.random.default_rng(1))
    seg = _StubSegmenter([z for z, _ in images])
    dataset = _Set([o for _, o in images])
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend="aot_eager", **kw))
    outs = [evaluate_dataset(seg, dataset, batch_size=3, calib_pixels_per_image=0, features=None,
                             compile_metrics=compiled) for compiled in (False, True)]
    rows = [metric_rows(out, {"model": "stub"}).set_index("metric")["value"] for out in outs]
    assert rows[0].index.str.endswith("_msp").sum() == len(IMAGE_METRICS) + len(POOLED_METRICS)
    pd.testing.assert_series_equal(rows[0], rows[1])
    np.testing.assert_array_equal(outs[0].ood["per_image"], outs[1].ood["per_image"])
    conf = engine.class_scores(torch.from_numpy(images[0][0])[None])[1]
    assert (conf == 1).float().mean() > 0.3


def _float64_scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    """-max softmax, -max logit, softmax entropy of (19, H, W) logits, float64, with scipy."""
    z = logits.astype(np.float64)
    p = softmax(z, axis=0)
    return {"msp": -p.max(0), "max_logit": -z.max(0), "entropy": -(p * log_softmax(z, axis=0)).sum(0)}


def test_evaluate_stage_tiny_profile_ood_rows_equal_sklearn(tmp_path, compose_cfg):
    """The evaluate stage (tiny profile, demo Road Anomaly) writes OOD rows to metrics.parquet equal to sklearn on
    scores computed here from the model's logits in float64; the ood_detection stage carries them unchanged.
    Batch size 1, so that the model's logits here are bit for bit the stage's (batched convolutions round
    differently)."""
    data = tmp_path / "data"
    DemoDataJob(root=str(data), image_size=[96, 48], n_train=1, n_val=1, n_shift=1, n_ood=4).run()
    # synthrel/conf/zoo/tiny.yaml's pspnet_r18 folder, as the tiny_models stage writes it (synthrel/conf/stage/tiny_models.yaml)
    ensure_tiny_segmenter("pspnet_r18", tmp_path / "models" / "zoo" / "pspnet_r18")
    overrides = ["profile=tiny", "device=cpu", f"paths.data_dir={data}", f"paths.artifacts_dir={tmp_path}/art",
                 f"profile.models_dir={tmp_path}/models"]
    cfg = compose_cfg("+stage=[evaluate,ood_detection]", *overrides, "stages.evaluate.models=[pspnet_r18]",
                      "stages.evaluate.datasets=[road_anomaly]", "stages.evaluate.num_workers=0",
                      "stages.evaluate.batch_size=1",
                      "stages.ood_detection.datasets=[road_anomaly]", "~stages.ood_detection.rba.models")
    hydra.utils.instantiate(cfg.stages.evaluate, _convert_="all").run()
    folder = tmp_path / "art" / "results" / "tiny" / "pspnet_r18" / "road_anomaly"
    table = pd.read_parquet(folder / "metrics.parquet").set_index("metric")

    dataset = hydra.utils.instantiate(cfg.datasets.road_anomaly)
    seg = build_segmenter(get_entry(hydra.utils.instantiate(cfg.zoo, _convert_="all"), "pspnet_r18"), "cpu")
    per_image = {name: [] for name in OOD_SCORES}
    pooled = {name: ([], []) for name in OOD_SCORES}
    for i in range(len(dataset)):
        sample = dataset[i]
        with torch.no_grad():
            scores = _float64_scores(seg.logits(sample["image"][None])[0].numpy())
        mask = (sample["ood"].ravel() == 1).astype(int)
        assert 0 < mask.sum() < mask.size
        for name in OOD_SCORES:
            per_image[name].append(genval_reference(-scores[name].ravel(), mask))
            pooled[name][0].append(scores[name].ravel())
            pooled[name][1].append(sample["ood"].ravel())
    # float64 scores here, float32 in the engine. The max logit is exact in both. This untrained model's softmax
    # is nearly uniform: its max softmax (~0.06, float32 ulp 4e-9) and entropy (~log 19, ulp 2.4e-7) cluster so
    # tightly that a few float32 roundings tie or swap pixels, worth up to ~1e-6 / ~6e-5 of a metric here.
    # (Equality on the engine's own float32 scores, 1e-9: test_engine_ood_metrics_on_adversarial_images.)
    tolerance = {"max_logit": 1e-12, "msp": 2e-6, "entropy": 1e-4}
    for name in OOD_SCORES:
        for m in IMAGE_METRICS:
            assert table.loc[f"img_{m}_{name}", "value"] == pytest.approx(
                np.mean([r[m] for r in per_image[name]]), abs=tolerance[name]), (m, name)
            assert table.loc[f"img_{m}_{name}", "n_images"] == len(dataset)
        ref = rba_reference(np.concatenate(pooled[name][0]), np.concatenate(pooled[name][1]))
        for m in POOLED_METRICS:
            assert table.loc[f"{m}_{name}", "value"] == pytest.approx(ref[m], abs=tolerance[name]), (m, name)
    assert table.loc["n_images_without_ood", "value"] == table.loc["n_images_only_ood", "value"] == 0

    summary = hydra.utils.instantiate(cfg.stages.ood_detection, _convert_="all").run()
    ood = pd.read_parquet(f"{summary['output_dir']}/ood_detection.parquet").set_index("metric")
    pd.testing.assert_series_equal(ood["value"].sort_index(), table.loc[ood.index, "value"].sort_index())
    assert set(ood.loc[[f"auroc_{s}" for s in OOD_SCORES], "convention"]) == {"rba_pooled"}
    assert set(ood.loc[[f"img_aupr_out_{s}" for s in OOD_SCORES], "convention"]) == {"genval_per_image"}

    # the report stage gathers the two layouts (in %) from the analysis folder
    analysis = tmp_path / "art" / "analysis" / cfg.task_name
    pooled_layout = pd.read_csv(analysis / "ood_rba_pooled.csv").set_index(["model", "score"])
    assert pooled_layout.loc[("pspnet_r18", "entropy"), "road_anomaly fpr95"] == pytest.approx(
        100 * table.loc["fpr95_entropy", "value"])
    image_layout = pd.read_csv(analysis / "ood_genval_per_image.csv").set_index(["model", "score"])
    assert image_layout.loc[("pspnet_r18", "msp"), "road_anomaly aupr_out"] == pytest.approx(
        100 * table.loc["img_aupr_out_msp", "value"])
    report = ReportJob(analysis_dir=str(analysis), profile="tiny").run()
    text = Path(report["report"]).read_text()
    assert "Table 2 layout: OOD detection pooled" in text and "GenVal convention" in text
