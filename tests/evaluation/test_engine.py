"""End-to-end: EvaluateJob on a tiny PSPNet and a tiny Cityscapes-layout set, checked against mmseg + sklearn."""

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix
from torchmetrics.classification import MulticlassCalibrationError

from synthrel.conventions import CLASS_NAMES
from synthrel.data.cityscapes import CityscapesDataset
from synthrel.errors import ConfigError
from synthrel.evaluation.engine import OOD_BINS, OOD_RANGES, evaluate_dataset
from synthrel.evaluation.job import EvaluateJob
from synthrel.evaluation.results import COLUMNS, load_results
from synthrel.jobs import item_rng
from synthrel.zoo.predictor import build_segmenter
from synthrel.zoo.registry import get_entry


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
    assert calib["features"].shape[0] == 3 and list(calib["image_ids"]) == ds.ids()


def test_finished_job_is_skipped_unless_forced(job_setup, tmp_path):
    _, _, kwargs = job_setup
    EvaluateJob(**kwargs).run()
    done = tmp_path / "res" / "tz" / "psp" / "cityscapes" / "DONE"
    stamp = done.stat().st_mtime_ns
    assert EvaluateJob(**kwargs).run() == {"results_dir": str(tmp_path / "res" / "tz"), "evaluated": 0,
                                           "skipped": 1, "result_dirs": [str(done.parent)]}
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


def test_unknown_model_key_lists_valid_keys(job_setup):
    _, _, kwargs = job_setup
    with pytest.raises(ConfigError, match=r"unknown zoo model 'nope'.*valid names: psp"):
        EvaluateJob(**{**kwargs, "models": ["nope"]})
    with pytest.raises(ConfigError, match="valid names: cityscapes"):
        EvaluateJob(**{**kwargs, "datasets": ["acdc"]})


class _OODSet(torch.utils.data.Dataset):
    def __init__(self, n=3):
        rng = np.random.default_rng(3)
        self.samples = []
        for i in range(n):
            ood = rng.choice(np.array([0, 1, 255], dtype=np.uint8), (40, 80), p=[0.7, 0.2, 0.1])
            self.samples.append({"id": f"im{i}", "image": rng.integers(0, 256, (40, 80, 3), dtype=np.uint8),
                                 "label": None, "ood": ood})

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_ood_histograms_match_numpy(tiny_pspnet):
    _, entry = tiny_pspnet
    seg = build_segmenter(get_entry({"models": {"psp": entry}}, "psp"))
    ds = _OODSet()
    out = evaluate_dataset(seg, ds, batch_size=2, calib_pixels_per_image=0)
    assert out.confusion is None and out.calib is None
    msp = {0: [], 1: []}
    for s in ds.samples:
        p = seg.logits(s["image"][None])[0].softmax(0).max(0).values.numpy()
        for k in (0, 1):
            msp[k].append(p[s["ood"] == k])
    for k in (0, 1):
        ref, _ = np.histogram(np.concatenate(msp[k]), bins=OOD_BINS, range=OOD_RANGES["msp"])
        got = out.ood["pooled"][0, k]
        assert got.sum() == ref.sum() == sum(int((s["ood"] == k).sum()) for s in ds.samples)
        assert np.abs(got - ref).sum() <= 4  # values on a bin edge may fall either side
    per_image = out.ood["per_image"]
    assert per_image.shape[:3] == (3, 3, 2)
    np.testing.assert_array_equal(per_image.sum(axis=(0, 3))[0], out.ood["pooled"][0].sum(1))
