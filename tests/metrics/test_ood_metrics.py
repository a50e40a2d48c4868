"""OOD metrics against sklearn (exact versions) and against the exact versions (histogram versions)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from synthrel.metrics.ood import (
    entropy_score,
    max_logit_score,
    msp_score,
    ood_metrics_from_counts,
    per_image_ood_metrics,
    pooled_ood_metrics,
    rba_score,
    score_histograms,
)


def _random_case(rng, n, decimals):
    """Scores rounded to few decimals (many ties), labels 0/1 with ~10% ignore pixels."""
    labels = (rng.random(n) < 0.3).astype(np.uint8)
    scores = np.round(rng.normal(size=n) + 0.8 * labels, decimals)
    labels[rng.random(n) < 0.1] = 255
    return scores, labels


@pytest.mark.parametrize("decimals", [0, 1, 2, 6])
def test_pooled_metrics_equal_sklearn_with_ties_and_ignore(decimals):
    rng = np.random.default_rng(decimals)
    for _ in range(20):
        scores, labels = _random_case(rng, int(rng.integers(20, 400)), decimals)
        got = pooled_ood_metrics(scores, labels)
        keep = labels != 255
        y, s = labels[keep], scores[keep]
        fpr, tpr, _ = roc_curve(y, s)
        fpr95 = next(f for t, f in zip(tpr, fpr, strict=True) if t > 0.95)  # RbA's loop
        assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert got["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert got["fpr95"] == pytest.approx(fpr95, abs=1e-12)


@pytest.mark.parametrize("decimals", [0, 1, 6])
def test_per_image_metrics_follow_genval_definitions(decimals):
    rng = np.random.default_rng(10 + decimals)
    for _ in range(20):
        scores, labels = _random_case(rng, int(rng.integers(20, 400)), decimals)
        got = per_image_ood_metrics(scores, labels)
        y = (labels == 1).astype(int)  # GenVal: no void handling, everything not OOD is ID
        fpr, tpr, _ = roc_curve(y, scores)
        precision, recall, _ = precision_recall_curve(y, scores)
        precision_out, recall_out, _ = precision_recall_curve(1 - y, -scores)
        assert got["auroc"] == pytest.approx(auc(fpr, tpr), abs=1e-12)
        assert got["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)
        assert got["aupr_in"] == pytest.approx(auc(recall, precision), abs=1e-12)
        assert got["aupr_out"] == pytest.approx(auc(recall_out, precision_out), abs=1e-12)


def test_fpr95_conventions_differ_on_a_hand_worked_case():
    # 20 OOD pixels: 19 at score 2 (TPR 0.95 exactly, with one ID pixel), the 20th at 0 with the other 9 ID.
    scores = np.r_[np.full(19, 2.0), 0.0, 2.0, np.zeros(9)]
    labels = np.r_[np.ones(20), np.zeros(10)].astype(np.uint8)
    assert per_image_ood_metrics(scores, labels)["fpr95"] == pytest.approx(0.1)  # TPR >= 0.95 at FPR 0.1
    assert pooled_ood_metrics(scores, labels)["fpr95"] == pytest.approx(1.0)  # TPR > 0.95 only at the end


def test_missing_class_gives_nan_and_bad_labels_raise():
    assert np.isnan(pooled_ood_metrics(np.arange(4.0), np.zeros(4, np.uint8))["auroc"])
    with pytest.raises(ValueError, match="labels must be"):
        pooled_ood_metrics(np.arange(3.0), np.array([0, 1, 7]))


def test_histogram_metrics_close_to_exact():
    """10,000 bins over the score range: AUROC/AP within 2e-3 and FPR95 within 5e-3 of the exact values."""
    rng = np.random.default_rng(3)
    labels = (rng.random(200_000) < 0.05).astype(np.uint8)
    scores = rng.beta(2, 5, size=labels.size) + 0.25 * labels * rng.random(labels.size)
    exact = pooled_ood_metrics(scores, labels)
    pos, neg = score_histograms(scores, labels == 1, np.linspace(0, 1.25, 10_001))
    binned = ood_metrics_from_counts(pos, neg)
    assert binned["auroc"] == pytest.approx(exact["auroc"], abs=2e-3)
    assert binned["ap"] == pytest.approx(exact["ap"], abs=2e-3)
    assert binned["fpr95"] == pytest.approx(exact["fpr95"], abs=5e-3)


def test_scores_are_oriented_higher_is_more_ood():
    logits = torch.tensor([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0]]).T.reshape(1, 3, 1, 2)  # pixel 0 confident
    for fn in (msp_score, max_logit_score, entropy_score):
        s = fn(logits)[0, 0]
        assert s[0] < s[1], fn.__name__
    assert msp_score(logits)[0, 0, 1] == pytest.approx(-1 / 3)
    assert entropy_score(logits)[0, 0, 1] == pytest.approx(np.log(3), abs=1e-6)
    assert max_logit_score(logits)[0, 0, 0] == pytest.approx(-10.0)


def test_rba_score_hand_worked():
    class_l = torch.tensor([0.0, 1.0, -1.0, 2.0]).view(1, 4, 1, 1)
    expected = -(np.tanh(0.0) + np.tanh(1.0) + np.tanh(-1.0) + np.tanh(2.0))  # = -tanh(2) = -0.96403
    assert rba_score(class_l).item() == pytest.approx(expected, abs=1e-6)
    assert rba_score(torch.zeros(1, 19, 1, 1)).item() == 0.0
