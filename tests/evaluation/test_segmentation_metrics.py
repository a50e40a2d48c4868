"""mIoU / pixel accuracy against sklearn's confusion matrix; ECE against torchmetrics and a hand example."""

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix
from torchmetrics.classification import MulticlassCalibrationError

from synthrel.evaluation.engine import OnePassAccumulator
from synthrel.metrics.calibration import ece_from_bins
from synthrel.metrics.segmentation import (
    iou_per_class,
    mean_iou,
    new_confusion,
    pixel_accuracy,
    update_confusion,
)


def _random_maps(seed=0, shape=(3, 40, 50)):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 19, shape).astype(np.uint8)
    label[rng.random(shape) < 0.2] = 255  # ignore
    label[label == 7] = 3  # class 7 absent from the ground truth
    pred = np.where(rng.random(shape) < 0.6, label, rng.integers(0, 19, shape)).astype(np.uint8)
    pred[pred == 255] = 0
    pred[pred == 16] = 2  # class 16 never predicted
    return label, pred


def test_miou_matches_sklearn_confusion_matrix():
    label, pred = _random_maps()
    cm = new_confusion()
    for lab, prd in zip(label, pred, strict=True):  # accumulated image by image, pooled
        update_confusion(cm, torch.from_numpy(prd), torch.from_numpy(lab))
    valid = label < 19
    ref = confusion_matrix(label[valid], pred[valid], labels=list(range(19)))
    np.testing.assert_array_equal(cm.numpy(), ref)
    tp = np.diag(ref).astype(float)
    union = ref.sum(0) + ref.sum(1) - tp
    ref_iou = np.array([tp[c] / union[c] if union[c] else np.nan for c in range(19)])
    np.testing.assert_allclose(iou_per_class(cm), ref_iou, equal_nan=True)
    assert iou_per_class(cm)[7] == 0.0  # absent in GT but predicted: union > 0, IoU 0 (not NaN)
    assert mean_iou(cm) == pytest.approx(np.nanmean(ref_iou))
    assert pixel_accuracy(cm) == pytest.approx((label[valid] == pred[valid]).mean())


def test_absent_classes_forced_nan_and_empty_union_nan():
    label = np.array([[0, 0, 1, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 9]], dtype=np.uint8)
    cm = update_confusion(new_confusion(), torch.from_numpy(pred), torch.from_numpy(label))
    iou = iou_per_class(cm, absent_classes=(1,))
    assert iou[0] == pytest.approx(1 / 2) and np.isnan(iou[1]) and np.isnan(iou[5])  # 5: empty union
    assert mean_iou(cm, absent_classes=(1,)) == pytest.approx(0.5)  # nanmean over {road}
    assert mean_iou(cm) == pytest.approx((1 / 2 + 1 / 2) / 2)  # road 1/2, sidewalk 1/2


def test_engine_ece_matches_torchmetrics_and_hand_example():
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(0, 2, (2, 19, 8, 9)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 19, (2, 8, 9)).astype(np.uint8))
    labels[0, :2] = 255
    acc = OnePassAccumulator("cpu", calib_pixels_per_image=0, seed=0)
    acc.update(logits, labels, None, torch.ones(2, 4), [0, 1], ["a", "b"])
    out = acc.result()
    valid = labels.long() < 19
    probs = logits.softmax(1).permute(0, 2, 3, 1)[valid]
    ref = MulticlassCalibrationError(num_classes=19, n_bins=15, norm="l1")(probs, labels.long()[valid])
    assert ece_from_bins(out.ece_bins) == pytest.approx(float(ref), abs=1e-6)

    # 4 pixels, 2 classes: confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right)
    # bin (0.867, 0.933]: acc 1/2 vs conf 0.9 -> |0.5 - 0.9| * 2/4 = 0.2; bin (0.6-]: |1 - 0.6| * 2/4 = 0.2
    p = torch.tensor([0.9, 0.9, 0.6, 0.6])
    two = torch.stack([torch.log(p), torch.log(1 - p)], 0)  # class 0 has prob p
    z = torch.full((1, 19, 1, 4), -1e4)
    z[0, :2, 0] = two
    lab = torch.tensor([[[0, 1, 0, 0]]], dtype=torch.uint8)
    hand = OnePassAccumulator("cpu", calib_pixels_per_image=0, seed=0)
    hand.update(z, lab, None, torch.ones(1, 2), [0], ["x"])
    assert ece_from_bins(hand.result().ece_bins) == pytest.approx(0.4, abs=1e-6)
