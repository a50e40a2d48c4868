"""Exact OOD metrics against independent references: sklearn called as GenVal and RbA call it, and a brute-force
pairwise AUROC in float64. Adversarial inputs: scores of confident logits (max softmax saturated to 1.0 in
float32), heavy ties, runs of identical (OOD, ID) tie groups (sklearn's drop_intermediate), void pixels, -0.0,
images without OOD or without ID pixels, NaN scores."""

import numpy as np
import pytest
import torch
from ood_reference import brute_force_auroc, genval_reference, rba_reference
from scipy.special import softmax

from synthrel.metrics.ood import (
    IMAGE_METRICS,
    OODAccumulator,
    PooledOODCounts,
    dataset_rows,
    describe_row,
    float_keys,
    image_ood_metrics,
    per_image_ood_metrics,
    pooled_ood_metrics,
    rba_score,
)


def confident_msp(rng, n: int, is_ood: np.ndarray, margin_lo=10.0, margin_hi=50.0) -> np.ndarray:
    """float32 max softmax of 19-class logits whose top margin is 10-50 (lower for OOD pixels): mostly 1.0."""
    logits = rng.normal(size=(n, 19)).astype(np.float32)
    margin = rng.uniform(margin_lo, margin_hi, n) * np.where(is_ood, 0.3, 1.0)
    logits[np.arange(n), rng.integers(0, 19, n)] += margin.astype(np.float32)
    return torch.softmax(torch.from_numpy(logits), dim=1).amax(1).numpy()


def image_cases(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(conf, labels 0/1/255) per image, of one size, each adversarial in its own way."""
    rng = np.random.default_rng(seed)
    n = 600
    cases = []
    labels = rng.choice(np.array([0, 1, 255], np.uint8), n, p=[0.6, 0.3, 0.1])
    cases.append((np.round(rng.normal(size=n) - labels % 2, 1).astype(np.float32), labels))  # ties, void
    labels = rng.choice(np.array([0, 1, 255], np.uint8), n, p=[0.8, 0.15, 0.05])
    cases.append((confident_msp(rng, n, labels == 1), labels))  # saturated MSP
    assert (cases[-1][0] == 1.0).mean() > 0.3
    # runs of identical tie groups (1 OOD + 2 ID at each value), then a few distinct values
    labels = np.tile(np.array([1, 0, 0], np.uint8), n // 3)
    conf = np.repeat(np.arange(n // 3, dtype=np.float32), 3)
    conf[:30] = rng.random(30)
    cases.append((conf, labels))
    conf = rng.integers(-2, 3, n).astype(np.float32)
    conf[conf == 0] = np.where(rng.random((conf == 0).sum()) < 0.5, -0.0, 0.0)  # -0.0 ties with +0.0
    cases.append((conf, rng.choice(np.array([0, 1], np.uint8), n)))
    cases.append((np.ones(n, np.float32), rng.choice(np.array([0, 1, 255], np.uint8), n)))  # one score: one run
    cases.append((rng.random(n).astype(np.float32), np.where(rng.random(n) < 0.5, 0, 255).astype(np.uint8)))  # no OOD
    cases.append((rng.random(n).astype(np.float32), np.where(rng.random(n) < 0.5, 1, 255).astype(np.uint8)))  # all OOD
    cases.append((rng.random(n).astype(np.float32), np.zeros(n, np.uint8)))  # ID only
    cases.append((rng.random(n).astype(np.float32), np.ones(n, np.uint8)))  # OOD only
    return cases


@pytest.mark.parametrize("seed", [0, 1])
def test_per_image_metrics_equal_genval_sklearn(seed):
    cases = image_cases(seed)
    conf = torch.from_numpy(np.stack([c for c, _ in cases]))
    labels = torch.from_numpy(np.stack([lab for _, lab in cases]))
    got = image_ood_metrics(-conf, labels == 1).numpy()  # one batched call, rows of different content
    assert got.dtype == np.float64 and got.shape == (len(cases), 4)
    for row, (c, lab) in zip(got, cases, strict=True):
        mask = (lab == 1).astype(int)  # GenVal: every pixel counts, void is ID
        if mask.all() or not mask.any():
            assert np.isnan(row).all()
            with pytest.warns(Warning):  # sklearn: the curve is undefined
                assert np.isnan(genval_reference(c, mask)["auroc"])
            continue
        ref = genval_reference(c, mask)
        np.testing.assert_allclose(row, [ref[m] for m in IMAGE_METRICS], rtol=0, atol=1e-12)
        assert row[0] == pytest.approx(brute_force_auroc(-c, mask == 1), abs=1e-12)


def test_drop_intermediate_decides_genval_fpr95():
    """Identical (1 OOD, 1 ID) tie groups are collinear: sklearn drops the inner ones, and the first point with
    TPR >= 0.95 moves to the end of the run, FPR 1.0 instead of 0.95 on the full curve."""
    conf = np.repeat(np.arange(20, dtype=np.float32), 2)
    mask = np.tile([1, 0], 20)
    got = per_image_ood_metrics(-conf, mask)
    ref = genval_reference(conf, mask)
    assert ref["fpr95"] == 1.0 and got["fpr95"] == 1.0
    assert got == pytest.approx(ref, abs=1e-12)


def test_fpr95_conventions_differ_on_a_hand_worked_case():
    # 20 OOD pixels: 19 at score 2 (TPR 0.95 exactly, with one ID pixel), the 20th at 0 with the other 9 ID.
    scores = np.r_[np.full(19, 2.0), 0.0, 2.0, np.zeros(9)]
    labels = np.r_[np.ones(20), np.zeros(10)].astype(np.uint8)
    assert per_image_ood_metrics(scores, labels)["fpr95"] == pytest.approx(0.1)  # TPR >= 0.95 at FPR 0.1
    assert pooled_ood_metrics(scores, labels)["fpr95"] == pytest.approx(1.0)  # TPR > 0.95 only at the end


@pytest.mark.parametrize("curve_chunk", [1, 2, 37, PooledOODCounts.CURVE_CHUNK])
@pytest.mark.parametrize("decimals", [0, 1, 3, None])
def test_pooled_counts_over_batches_equal_sklearn(decimals, curve_chunk, monkeypatch):
    """Many small batches, merged every few updates (MIN_MERGE lowered), void excluded; the curve in windows of
    1, 2 and 37 thresholds or in one."""
    monkeypatch.setattr(PooledOODCounts, "MIN_MERGE", 64)
    monkeypatch.setattr(PooledOODCounts, "CURVE_CHUNK", curve_chunk)
    rng = np.random.default_rng(7)
    counts, all_scores, all_labels = PooledOODCounts(), [], []
    for _ in range(25):
        n = int(rng.integers(1, 300))
        labels = rng.choice(np.array([0, 1, 255], np.uint8), n, p=[0.7, 0.2, 0.1])
        scores = rng.normal(size=n) * 5 + 3 * (labels == 1)
        scores = (np.round(scores, decimals) if decimals is not None else scores).astype(np.float32)
        counts.update(torch.from_numpy(scores), torch.from_numpy(labels))
        all_scores.append(scores)
        all_labels.append(labels)
    scores, labels = np.concatenate(all_scores), np.concatenate(all_labels)
    ref = rba_reference(scores, labels)
    assert counts.metrics() == pytest.approx(ref, abs=1e-12)
    keep = labels <= 1
    assert counts.n_distinct == len(np.unique(scores[keep]))
    assert counts.metrics()["auroc"] == pytest.approx(brute_force_auroc(scores[keep], labels[keep] == 1), abs=1e-12)


@pytest.mark.parametrize("curve_chunk", [1, 2, 3, 4, 5])
def test_pooled_windows_keep_sklearn_drop_intermediate_fpr95(curve_chunk, monkeypatch):
    """Runs of identical tie groups (1 OOD + 2 ID per value: equal steps, so sklearn drops those points) with
    FPR95's point in every position of a window: the windowed curve finds the same kept point and sums."""
    monkeypatch.setattr(PooledOODCounts, "CURVE_CHUNK", curve_chunk)
    rng = np.random.default_rng(3)
    for n_runs, void in ((100, 0.0), (101, 0.0), (40, 0.05)):
        labels = np.tile(np.array([1, 0, 0], np.uint8), n_runs)
        scores = np.repeat(np.arange(n_runs, dtype=np.float32), 3)
        scores[-6:] = n_runs + rng.random(6)  # a few distinct top scores, then equal steps down to the end
        labels[rng.random(labels.size) < void] = 255
        ref = rba_reference(scores, labels)
        assert pooled_ood_metrics(scores, labels) == pytest.approx(ref, abs=1e-12)
        if not void:
            assert ref["fpr95"] == 1.0  # TPR > 0.95 first at a dropped point: FPR95 is the last point's


def test_pooled_metrics_with_saturated_confidence_and_max_logit():
    """Max softmax of confident logits (most pixels 1.0 in float32) and large max logits, negated."""
    rng = np.random.default_rng(11)
    labels = rng.choice(np.array([0, 1, 255], np.uint8), 5000, p=[0.85, 0.1, 0.05])
    msp = confident_msp(rng, labels.size, labels == 1)
    assert (msp == 1.0).mean() > 0.3
    logits = rng.normal(size=(labels.size, 19)).astype(np.float32) * 20
    for score in (-msp, -logits.max(1)):
        got = pooled_ood_metrics(score, labels)
        assert got == pytest.approx(rba_reference(score, labels), abs=1e-12)


def test_float64_scores_are_compared_in_float64():
    """Scores 1e-12 apart (one float32 value): per-image and pooled metrics of float64 input equal sklearn on the
    float64 scores to 1e-12 (a float32 cast would tie them all: AUROC 0.5); float16 widens exactly to float32; a
    float32 table refuses float64 scores rather than round them."""
    rng = np.random.default_rng(4)
    labels = rng.choice(np.array([0, 1, 255], np.uint8), 4000, p=[0.7, 0.2, 0.1])
    scores = 1.0 + 1e-12 * (rng.normal(size=labels.size) + 1.5 * (labels == 1))
    assert len(np.unique(scores.astype(np.float32))) == 1
    mask = (labels == 1).astype(int)
    ref = genval_reference(-scores, mask)
    assert ref["auroc"] > 0.8
    assert per_image_ood_metrics(scores, labels) == pytest.approx(ref, abs=1e-12)
    got = image_ood_metrics(torch.from_numpy(scores)[None], torch.from_numpy(labels == 1)[None])[0].numpy()
    np.testing.assert_allclose(got, [ref[m] for m in IMAGE_METRICS], rtol=0, atol=1e-12)
    assert pooled_ood_metrics(scores, labels) == pytest.approx(rba_reference(scores, labels), abs=1e-12)
    counts = PooledOODCounts(dtype=torch.float64)
    counts.update(torch.from_numpy(scores[:1000]), torch.from_numpy(labels[:1000]))
    counts.add_counts(torch.from_numpy(scores[1000:].astype(np.float32)), torch.ones(3000), torch.zeros(3000))
    with pytest.raises(ValueError, match="dtype=torch.float64"):
        PooledOODCounts().update(torch.from_numpy(scores), torch.from_numpy(labels))
    half = np.round(rng.normal(size=labels.size), 2).astype(np.float16)
    assert pooled_ood_metrics(half, labels) == pytest.approx(rba_reference(half.astype(np.float32), labels), abs=1e-12)
    assert per_image_ood_metrics(half, labels) == pytest.approx(genval_reference(-half.astype(np.float32), mask),
                                                                abs=1e-12)
    assert rba_score(torch.full((1, 3), 0.5, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_keys_order_like_the_floats(dtype):
    rng = np.random.default_rng(2)
    x = np.r_[rng.normal(size=500) * 10.0 ** rng.integers(-40, 38, 500), 0.0, -0.0, np.inf, -np.inf, 1e-45,
              -1e-45, 3.4e38, -3.4e38].astype(dtype)
    if dtype == np.float64:
        x = np.r_[x, 5e-324, -5e-324, 1.7e308, -1.7e308, 1 + 2e-16, 1.0]
    keys = float_keys(torch.from_numpy(x)).numpy()
    assert keys.dtype == (np.int32 if dtype == np.float32 else np.int64)
    ki, kj, xi, xj = keys[:, None], keys[None, :], x[:, None], x[None, :]
    np.testing.assert_array_equal((ki > kj).astype(int) - (ki < kj), (xi > xj).astype(int) - (xi < xj))


def test_missing_class_gives_nan_and_bad_labels_raise():
    assert all(np.isnan(v) for v in pooled_ood_metrics(np.arange(4.0), np.zeros(4, np.uint8)).values())
    assert all(np.isnan(v) for v in pooled_ood_metrics(np.arange(4.0), np.full(4, 255, np.uint8)).values())
    with pytest.raises(ValueError, match="labels must be"):
        pooled_ood_metrics(np.arange(3.0), np.array([0, 1, 7]))
    with pytest.raises(ValueError, match="NaN"):
        pooled_ood_metrics(np.array([0.0, np.nan, 1.0]), np.array([0, 1, 1]))
    assert np.isnan(image_ood_metrics(torch.tensor([[0.0, np.nan, 1.0]]), torch.tensor([[False, True, True]]))).all()


def test_accumulator_rows_follow_both_conventions(monkeypatch):
    """Two batches of two scores: per-image rows are GenVal's (void = ID), pooled counts RbA's (void out), the
    images' runs of tied scores merged into the pooled table as they come (MIN_MERGE lowered)."""
    monkeypatch.setattr(PooledOODCounts, "MIN_MERGE", 16)
    rng = np.random.default_rng(5)
    acc = OODAccumulator(["a", "b"])
    images = []
    for batch in (2, 3):
        oods = rng.choice(np.array([0, 1, 255], np.uint8), (batch, 12, 9), p=[0.6, 0.3, 0.1])
        oods[0, :, :] = np.where(oods[0] == 1, 0, oods[0])  # an image without OOD pixels
        scores = np.round(rng.normal(size=(2, batch, 12, 9)) + (oods == 1), 1).astype(np.float32)
        acc.update(torch.from_numpy(scores), torch.from_numpy(oods))
        images += [(scores[:, i], oods[i]) for i in range(batch)]
    out = acc.result()
    assert out["per_image"].shape == (5, 2, 4)
    for i, (scores, oods) in enumerate(images):
        mask = (oods.ravel() == 1).astype(int)
        np.testing.assert_array_equal(out["image_pixels"][i], [mask.sum(), mask.size - mask.sum()])
        for s in range(2):
            if not mask.any():
                assert np.isnan(out["per_image"][i, s]).all()
                continue
            ref = genval_reference(-scores[s].ravel(), mask)
            np.testing.assert_allclose(out["per_image"][i, s], [ref[m] for m in IMAGE_METRICS], atol=1e-12)
    for s, name in enumerate(["a", "b"]):
        pooled_scores = np.concatenate([sc[s].ravel() for sc, _ in images])
        pooled_labels = np.concatenate([o.ravel() for _, o in images])
        assert out["pooled"][name] == pytest.approx(rba_reference(pooled_scores, pooled_labels), abs=1e-12)


def test_row_names_say_their_convention_and_score():
    rng = np.random.default_rng(1)
    acc = OODAccumulator(["msp", "max_logit"])
    acc.update(torch.from_numpy(rng.random((2, 2, 4, 5)).astype(np.float32)),
               torch.from_numpy(rng.integers(0, 2, (2, 4, 5)).astype(np.uint8)))
    rows = dataset_rows(acc.result())
    described = {m: describe_row(m) for m, _, _ in rows}
    assert described["img_aupr_in_max_logit"] == ("genval_per_image", "max_logit")
    assert described["fpr95_msp"] == ("rba_pooled", "msp")
    assert described["n_images_only_ood"] == ("genval_per_image", None)
    assert len(rows) == 2 + 2 * 7 and all(v is not None for v in described.values())
    assert [describe_row(m) for m in ("mIoU", "ece_paper", "pixel_acc", "IoU", "img_auroc_")] == [None] * 5


def test_rba_score_hand_worked():
    class_l = torch.tensor([0.0, 1.0, -1.0, 2.0]).view(1, 4, 1, 1)
    expected = -(np.tanh(0.0) + np.tanh(1.0) + np.tanh(-1.0) + np.tanh(2.0))  # = -tanh(2) = -0.96403
    assert rba_score(class_l).item() == pytest.approx(expected, abs=1e-6)
    assert rba_score(torch.zeros(1, 19, 1, 1)).item() == 0.0


def test_confident_msp_helper_is_softmax():
    """The test's own score helper against scipy (so the saturation above is the float32 softmax's)."""
    rng = np.random.default_rng(0)
    is_ood = np.zeros(50, bool)
    msp = confident_msp(np.random.default_rng(0), 50, is_ood)
    logits = rng.normal(size=(50, 19)).astype(np.float32)
    margin = rng.uniform(10.0, 50.0, 50)
    logits[np.arange(50), rng.integers(0, 19, 50)] += margin.astype(np.float32)
    np.testing.assert_allclose(msp, softmax(logits.astype(np.float64), axis=1).max(1), rtol=1e-6)
