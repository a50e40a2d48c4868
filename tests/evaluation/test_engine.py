"""End-to-end: EvaluateJob on a tiny PSPNet and a tiny Cityscapes-layout set, checked against mmseg + sklearn."""

import shutil

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix
from torchmetrics.classification import MulticlassCalibrationError

from synthrel.conventions import CLASS_NAMES
from synthrel.data.cityscapes import CityscapesDataset
from synthrel.errors import ConfigError
from synthrel.evaluation.job import EvaluateJob
from synthrel.evaluation.results import COLUMNS, load_results
from synthrel.jobs import item_rng


def _mmseg_logits(config, checkpoint, image_rgb):
    """Reference logits from mmseg's own init_model + inference_model (file path -> BGR via its loader)."""
    from synthrel.zoo.mmcv_shim import install

    install()
    from mmseg.apis import inference_model, init_model

    model = init_model(config, checkpoint, device="cpu")
    return inference_model(model, np.ascontiguousarray(image_rgb[..., ::-1])).seg_logits.data


@pytest.fixture
def job_setup(tmp_path, tiny_pspnet, cityscapes_dir):
    folder, entry = tiny_pspnet
    root = cityscapes_dir
    kwargs = dict(zoo={"name": "tz", "models": {"psp": entry}},
                  dataset_configs={"cityscapes": {"_target_": "synthrel.data.cityscapes.CityscapesDataset",
                                                  "root": str(root)}},
                  datasets=["cityscapes"], output_dir=str(tmp_path / "res"), batch_size=2, num_workers=0,
                  calib_pixels_per_image=700, seed=5, device="cpu", profile="tiny")
    return folder, root, kwargs


def test_evaluate_job_end_to_end(job_setup, tmp_path):
    folder, root, kwargs = job_setup
    summary = EvaluateJob(**kwargs).run()
    assert summary["evaluated"] == 1
    out_dir = tmp_path / "res" / "tz" / "psp" / "cityscapes"
    assert {p.name for p in out_dir.iterdir()} >= {"metrics.parquet", "metrics.csv", "confusion.npy",
                                                    "calib_sample.npz", "DONE"}
    df = load_results(tmp_path / "res")
    assert list(df.columns) == COLUMNS
    assert len(df) == 2 + 19 + 2  # mIoU, pixel_acc, 19 IoU, ece, ece_paper (no OOD mask here)
    assert set(df.model) == {"psp"} and set(df.family) == {"PSPNet"} and set(df.n_images) == {3}
    assert set(df.loc[df.metric == "IoU", "cls"]) == set(CLASS_NAMES)

    # independent reference: mmseg's inference_model per image, sklearn confusion, torchmetrics ECE
    ds = CityscapesDataset(root)
    labels, preds, probs = [], [], []
    for i in range(len(ds)):
        s = ds[i]
        logits = _mmseg_logits(str(folder / "config.py"), str(folder / "checkpoint.pth"), s["image"])
        valid = s["label"] < 19
        labels.append(s["label"][valid])
        preds.append(logits.argmax(0).numpy()[valid])
        probs.append(logits.softmax(0).permute(1, 2, 0).numpy()[valid])
    labels, preds, probs = map(np.concatenate, (labels, preds, probs))
    ref_cm = confusion_matrix(labels, preds, labels=list(range(19)))
    assert np.abs(np.load(out_dir / "confusion.npy") - ref_cm).sum() <= 2  # float ties at most
    tp = np.diag(ref_cm)
    with np.errstate(invalid="ignore"):
        ref_iou = tp / (ref_cm.sum(0) + ref_cm.sum(1) - tp)
    value = dict(zip(df.metric + df.cls, df.value, strict=True))
    assert value["mIoU"] == pytest.approx(np.nanmean(ref_iou), abs=1e-3)
    assert value["pixel_acc"] == pytest.approx((labels == preds).mean(), abs=1e-3)
    ref_ece = MulticlassCalibrationError(num_classes=19, n_bins=15)(torch.from_numpy(probs),
                                                                     torch.from_numpy(labels).long())
    assert value["ece"] == pytest.approx(float(ref_ece), abs=1e-4)

    # the paper protocol's sample: seeded draw per image, ignore dropped after the draw
    calib = np.load(out_dir / "calib_sample.npz")
    expected = 0
    for i in range(len(ds)):
        lab = ds[i]["label"].ravel()
        picks = item_rng(5, i, "calib").choice(lab.size, 700, replace=False)
        kept = lab[picks][lab[picks] != 255]
        np.testing.assert_array_equal(calib["labels"][calib["image_index"] == i], kept)
        expected += kept.size
    assert calib["logits"].shape == (expected, 19) and calib["logits"].dtype == np.float32
    assert calib["features"].size == 0  # no cluster TS in this run: no features (an extra pass in slide mode)
    assert list(calib["image_ids"]) == ds.ids()


def test_finished_job_is_skipped_unless_forced(job_setup, tmp_path):
    _, _, kwargs = job_setup
    EvaluateJob(**kwargs).run()
    done = tmp_path / "res" / "tz" / "psp" / "cityscapes" / "DONE"
    stamp = done.stat().st_mtime_ns
    again = EvaluateJob(**kwargs).run()
    steady = again.pop("steady_rates")
    assert again == {"results_dir": str(tmp_path / "res" / "tz"), "evaluated": 0,
                     "skipped": 1, "absent": [], "shard": "0/1", "pairs": 1,
                     "result_dirs": [str(done.parent)]}
    assert list(steady) == ["evaluate"] and steady["evaluate"]["units"] == 0  # nothing evaluated: no rate
    assert steady["evaluate"]["per_s"] is None
    assert done.stat().st_mtime_ns == stamp
    assert EvaluateJob(**{**kwargs, "force": True}).run()["evaluated"] == 1


def test_replaced_weights_are_evaluated_again(job_setup, tmp_path):
    """A retrained checkpoint (train_zoo, or a user's new file) must not leave the old rows in the tables."""
    folder, _, kwargs = job_setup
    EvaluateJob(**kwargs).run()
    checkpoint = folder / "checkpoint.pth"
    checkpoint.write_bytes(checkpoint.read_bytes())  # same weights, new file: the fingerprint changes
    assert EvaluateJob(**kwargs).run()["evaluated"] == 1
    assert EvaluateJob(**kwargs).run()["evaluated"] == 0


@pytest.mark.parametrize("change", [{"precision": "bf16"}, {"calib_pixels_per_image": 300}, {"seed": 6},
                                    {"calibrate_methods": ["global", "cluster"]}, {"features": "whole"}])
def test_a_changed_setting_is_evaluated_again_and_the_log_names_it(job_setup, change, caplog):
    _, _, kwargs = job_setup
    EvaluateJob(**kwargs).run()
    with caplog.at_level("INFO", logger="synthrel.evaluation.results"):
        assert EvaluateJob(**{**kwargs, **change}).run()["evaluated"] == 1
    key = next(iter(change)) if "features" not in change and "calibrate_methods" not in change else "features"
    assert f"changed since the last run: {key}" in caplog.text
    assert EvaluateJob(**{**kwargs, **change}).run()["evaluated"] == 0


def test_changed_dataset_files_or_root_are_evaluated_again(job_setup, tmp_path):
    _, root, kwargs = job_setup
    EvaluateJob(**kwargs).run()
    label = sorted(root.rglob("*_gtFine_labelIds.png"))[0]
    label.write_bytes(label.read_bytes())  # rewritten (e.g. regenerated labels): new mtime
    assert EvaluateJob(**kwargs).run()["evaluated"] == 1
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    moved = {**kwargs, "dataset_configs": {"cityscapes": {**kwargs["dataset_configs"]["cityscapes"],
                                                          "root": str(copy)}}}
    assert EvaluateJob(**moved).run()["evaluated"] == 1


def test_cluster_ts_gets_window_features_and_runs_without_reuse_them(job_setup, tmp_path):
    _, _, kwargs = job_setup
    EvaluateJob(**{**kwargs, "calibrate_methods": ["cluster"]}).run()
    calib = np.load(tmp_path / "res" / "tz" / "psp" / "cityscapes" / "calib_sample.npz")
    assert calib["features"].shape[0] == 3 and np.isfinite(calib["features"]).all()
    assert EvaluateJob(**kwargs).run()["evaluated"] == 0


def test_shards_split_the_pairs_without_overlap(job_setup, tmp_path):
    _, _, kwargs = job_setup
    configs = {name: kwargs["dataset_configs"]["cityscapes"] for name in ("cityscapes", "copy_a", "copy_b")}
    kwargs = {**kwargs, "dataset_configs": configs, "datasets": list(configs)}
    runs = [EvaluateJob(**{**kwargs, "shard": f"{i}/2"}).run() for i in range(2)]
    assert [r["evaluated"] for r in runs] == [2, 1]
    assert {p.parent.name for p in (tmp_path / "res" / "tz" / "psp").glob("*/DONE")} == set(configs)
    assert EvaluateJob(**kwargs).run()["skipped"] == 3


def test_results_with_histogram_ood_metrics_are_evaluated_again(job_setup, tmp_path):
    """A job folder left by the histogram version (ood_hist.npz) is not finished; evaluating removes the file."""
    _, _, kwargs = job_setup
    EvaluateJob(**kwargs).run()
    legacy = tmp_path / "res" / "tz" / "psp" / "cityscapes" / "ood_hist.npz"
    legacy.write_bytes(b"")
    assert EvaluateJob(**kwargs).run()["evaluated"] == 1 and not legacy.exists()
    assert EvaluateJob(**kwargs).run()["evaluated"] == 0


def test_unknown_model_key_lists_valid_keys(job_setup):
    _, _, kwargs = job_setup
    with pytest.raises(ConfigError, match=r"unknown zoo model 'nope'.*valid names: psp"):
        EvaluateJob(**{**kwargs, "models": ["nope"]})
    with pytest.raises(ConfigError, match="valid names: cityscapes"):
        EvaluateJob(**{**kwargs, "datasets": ["acdc"]})
