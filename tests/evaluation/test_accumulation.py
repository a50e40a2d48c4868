"""OnePassAccumulator.update (issue #9 fast accumulation) against references written from the definitions:
sklearn confusion matrices, numpy ECE bins over the (l, u] rule, the relis calibration draw, sklearn's OOD
metrics (GenVal per image, RbA pooled) on the engine's per-pixel scores, which are checked against scipy.
Random logits with ignore and void pixels, bf16 logits, ties and confidences on bin edges, confident logits."""

import numpy as np
import pytest
import torch
from ood_reference import float32_max_softmax, genval_reference, rba_reference
from scipy.special import logsumexp, softmax
from sklearn.metrics import confusion_matrix

from synthrel.evaluation import engine
from synthrel.evaluation.engine import OOD_SCORES, OnePassAccumulator, calibration_picks
from synthrel.metrics.ood import IMAGE_METRICS, POOLED_METRICS

N_CLASSES, ECE_BINS = 19, 15


def _scores(logits: torch.Tensor, exact: bool = False) -> dict[str, np.ndarray]:
    """Per-pixel top-1 class and softmax confidence by their definitions, from the logits upcast to float32:
    the confidence with torch.softmax's float32 arithmetic (`float32_max_softmax`, the engine's documented
    formula); `exact`: in float64."""
    z = logits.float().double().numpy()
    msp = np.exp(z.max(1) - logsumexp(z, axis=1)) if exact else float32_max_softmax(z)
    return {"pred": z.argmax(1), "msp": msp}


def _ece_bins(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """(3, 15) count / conf sum / correct sum; bin b holds conf in (b/15, (b+1)/15], conf <= 0 in none."""
    conf = conf.astype(np.float64)
    upper = np.minimum(np.ceil(conf.astype(np.float32) * np.float32(ECE_BINS)).astype(np.int64) - 1, ECE_BINS - 1)
    out = np.zeros((3, ECE_BINS))
    for b in range(ECE_BINS):
        member = upper == b
        out[:, b] = member.sum(), conf[member].sum(), correct[member].sum()
    return out


def _ood_reference(logits, oods, device, by_plane: bool) -> tuple[np.ndarray, dict]:
    """sklearn per image (GenVal: void is ID) and pooled (RbA: void left out) on the engine's float32 OOD scores
    (-confidence, -max logit, entropy of `class_scores`, checked against scipy in test_class_scores_against_scipy)."""
    fn = engine.class_scores_by_plane if by_plane else engine.class_scores
    _, conf, max_logit, entropy = (t.cpu().numpy() for t in fn(logits.to(device).float()))
    scores = dict(zip(OOD_SCORES, (-conf, -max_logit, entropy), strict=True))
    oods = oods.numpy()
    per_image = np.zeros((len(oods), len(OOD_SCORES), len(IMAGE_METRICS)))
    pooled = {}
    for s, name in enumerate(OOD_SCORES):
        for b in range(len(oods)):
            ref = genval_reference(-scores[name][b].ravel(), (oods[b].ravel() == 1).astype(int))
            per_image[b, s] = [ref[m] for m in IMAGE_METRICS]
        pooled[name] = rba_reference(scores[name].ravel(), oods.ravel())
    return per_image, pooled


def _reference(logits, labels, oods, seed, k, device, exact=False):
    """Every EvalOutputs field that update() feeds, computed image by image from the definitions."""
    s = _scores(logits, exact)
    labels, oods = labels.numpy(), oods.numpy()
    batch, height, width = labels.shape
    per_image, ece, ece_paper, calib = [], np.zeros((3, ECE_BINS)), np.zeros((3, ECE_BINS)), []
    for b in range(batch):
        valid = labels[b] != 255
        per_image.append(confusion_matrix(labels[b][valid], s["pred"][b][valid], labels=list(range(N_CLASSES))))
        ece += _ece_bins(s["msp"][b][valid], (s["pred"][b] == labels[b])[valid])
        picks = calibration_picks(seed, [b], height, width, k)[0]
        z = logits[b].float().flatten(1).T[picks].numpy()
        lab = labels[b].ravel()[picks]
        keep = lab != 255
        p = torch.softmax(torch.from_numpy(z).to(device), dim=1).cpu().numpy()
        ece_paper += _ece_bins(p.max(1)[keep], (p.argmax(1) == lab)[keep])
        calib.append((z[keep], lab[keep], np.full(keep.sum(), b, np.int32)))
    return dict(per_image=np.stack(per_image), ece=ece, ece_paper=ece_paper,
                calib=[np.concatenate(parts) for parts in zip(*calib, strict=True)])


def _batch(seed, batch=3, height=40, width=70, dtype=torch.float32):
    """Random logits (some pixels tied between classes, some with confidence exactly 1/15 * b), labels with
    ignore pixels, OOD masks with void."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, N_CLASSES, height, width, generator=gen) * 3
    logits[:, :, :3] = logits[:, :1, :3]  # ties: all classes equal -> pred 0, confidence 1/19
    logits[:, 5, 3:6] = logits[:, 2, 3:6] = logits[:, :, 3:6].amax(1) + 0.5  # a tie for the top class
    # confidence exactly 1/3 = 5/15 (an upper edge, (l, u] rule): top class 3 logits equal, the rest -inf-like
    logits[:, :, 6, :5] = -60.0
    logits[:, :3, 6, :5] = 1.0
    # confidence exactly 1 (the top edge): the other classes' exp underflows
    logits[:, :, 7, :5] = -200.0
    logits[:, 4, 7, :5] = 0.0
    logits = logits.to(dtype)
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(rng.integers(0, N_CLASSES, (batch, height, width), dtype=np.uint8))
    labels[torch.from_numpy(rng.random((batch, height, width)) < 0.2)] = 255
    oods = torch.from_numpy(rng.choice(np.array([0, 1, 255], np.uint8), (batch, height, width), p=[.6, .3, .1]))
    return logits, labels, oods


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("dtype", "compiled"), [(torch.float32, False), (torch.bfloat16, False),
                                                 pytest.param(torch.float32, True, marks=pytest.mark.slow)])
def test_update_equals_reference_from_definitions(dtype, compiled, device):
    """compiled: the per-batch statistics through inductor (fused reductions) give the same bins."""
    seed, k = 4, 500
    logits, labels, oods = _batch(seed, dtype=dtype)
    conf = _scores(logits)["msp"]
    assert (conf == 1).any() and np.isclose(conf, 1 / 3, rtol=1e-6).any() and np.isclose(conf, 1 / 19).any()
    acc = OnePassAccumulator(device, k, seed, compile=compiled)
    # two updates (images 2, 0 then 1: out of order), the second with host-drawn picks as the loader gives
    acc.update(logits[[2, 0]].to(device), labels[[2, 0]].to(device), oods[[2, 0]].to(device), None, [2, 0],
               ["c", "a"])
    picks = torch.from_numpy(calibration_picks(seed, [1], *labels.shape[1:], k))
    acc.update(logits[[1]].to(device), labels[[1]].to(device), oods[[1]].to(device), None, [1], ["b"], picks=picks)
    out = acc.result()
    # compiled, inductor's fused exp may round a last bit differently: compared with float64 definitions
    ref = _reference(logits, labels, oods, seed, k, device, exact=compiled)
    assert out.image_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(out.per_image_confusion, ref["per_image"])
    np.testing.assert_array_equal(out.confusion, ref["per_image"].sum(0))
    for ours, theirs in ((out.ece_bins, ref["ece"]), (out.ece_paper_bins, ref["ece_paper"])):
        np.testing.assert_array_equal(ours[[0, 2]], theirs[[0, 2]])  # counts are exact
        # confidence sums: torch's float32 exp and the reference's rounded float64 exp differ in a few pixels' last
        # bit (1e-8); compiled, inductor's fused exp in more
        np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6 if compiled else 1e-8, atol=0)
    order = np.argsort(out.calib["image_index"], kind="stable")
    np.testing.assert_array_equal(out.calib["image_index"][order], ref["calib"][2])
    np.testing.assert_array_equal(out.calib["labels"][order], ref["calib"][1])
    np.testing.assert_array_equal(out.calib["logits"][order], ref["calib"][0])
    per_image, pooled = _ood_reference(logits, oods, device, by_plane=compiled)
    # eager CPU: the same float32 scores, so sklearn's values up to summation order; CUDA kernels (which vary
    # with the batch shape) or fused compiled formulas may round a few scores' last bit differently
    tol = 1e-9 if device == "cpu" and not compiled else 2e-3
    np.testing.assert_allclose(out.ood["per_image"], per_image, rtol=0, atol=tol)
    for name in OOD_SCORES:
        np.testing.assert_allclose([out.ood["pooled"][name][m] for m in POOLED_METRICS],
                                   [pooled[name][m] for m in POOLED_METRICS], rtol=0, atol=tol)
    oods_np = oods.numpy().reshape(len(oods), -1)
    np.testing.assert_array_equal(out.ood["image_pixels"], np.stack([(oods_np == 1).sum(1), (oods_np != 1).sum(1)], 1))


@pytest.mark.parametrize("scores", [engine.class_scores, engine.class_scores_by_plane])
def test_class_scores_against_scipy(scores):
    """Top-1 class (first of ties), confidence, max logit and entropy against scipy in float64."""
    from scipy.stats import entropy

    logits, _, _ = _batch(7)
    pred, conf, max_logit, ent = (t.numpy() for t in scores(logits))
    z = logits.double().numpy()
    np.testing.assert_array_equal(pred, z.argmax(1))  # numpy's argmax: the first of tied maxima
    assert pred.dtype == np.int32 and (pred[:, :3] == 0).all() and (pred[:, 3:6] == 2).all()
    np.testing.assert_array_equal(max_logit, z.max(1).astype(np.float32))
    np.testing.assert_allclose(conf, np.exp(z.max(1) - logsumexp(z, axis=1)), rtol=2e-6, atol=0)
    np.testing.assert_allclose(ent, entropy(softmax(z, axis=1), axis=1), rtol=0, atol=5e-6)
    assert scores(logits, with_entropy=False)[3] is None


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 steps between non-negative float32 arrays."""
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scores", [engine.class_scores, engine.class_scores_by_plane])
def test_max_softmax_is_torch_softmax_on_confident_logits(scores, device):
    """Top-1 margins 5-50 (issue #34): the confidence has torch.softmax's float32 arithmetic (1 / sum of exp(l - max)
    in class order), so exactly as many pixels saturate at 1.0 as with torch.softmax and with that arithmetic
    written in numpy; values within 2 float32 steps of both (exp rounding). Against float64 softmax it stays within
    the float32 summation bound (C + 1) 2^-24 p (Higham): adding 18 terms onto 1 in float32 is up to ~10 steps
    off, so torch.softmax itself is not within 1 step of float64 (8 steps on these logits)."""
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(2, N_CLASSES, 40, 64, generator=gen)
    margin = 5 + 45 * torch.rand(2, 1, 40, 64, generator=gen)
    logits.scatter_add_(1, torch.randint(0, N_CLASSES, (2, 1, 40, 64), generator=gen), margin)
    conf = scores(logits.to(device))[1].cpu().numpy()
    torch_conf = torch.softmax(logits.to(device), dim=1).amax(1).cpu().numpy()
    numpy_conf = float32_max_softmax(logits.numpy())
    exact = softmax(logits.double().numpy(), axis=1).max(1)
    assert 0.3 < (conf == 1).mean() < 0.95
    assert (conf == 1).sum() == (torch_conf == 1).sum() == (numpy_conf == 1).sum()
    assert _ulps(conf, torch_conf).max() <= 2 and _ulps(conf, numpy_conf).max() <= 2
    assert (exact.astype(np.float32) == 1).sum() < (conf == 1).sum()  # float32 sums saturate more than float64
    assert (np.abs(conf - exact) <= (N_CLASSES + 1) * 2.0**-24 * exact).all()


@pytest.mark.parametrize("scores", [engine.class_scores, engine.class_scores_by_plane])
def test_entropy_of_confident_logits_keeps_its_relative_precision(scores):
    """Top-1 margins 10-50: the entropy (down to ~1e-19) within 1e-5 relative of -sum p log p in 40-digit
    arithmetic (float64 scipy loses it: p_top rounds to 1), so the OOD metrics rank confident pixels by their
    entropy, not by float32 cancellation noise."""
    import mpmath

    mpmath.mp.dps = 40

    def entropy(z):
        e = [mpmath.exp(mpmath.mpf(float(v))) for v in z]
        total = mpmath.fsum(e)
        return float(-mpmath.fsum(x / total * mpmath.log(x / total) for x in e))

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, N_CLASSES, 8, 16, generator=gen)
    margin = 10 + 40 * torch.rand(2, 8, 16, generator=gen)
    top = torch.randint(0, N_CLASSES, (2, 1, 8, 16), generator=gen)
    logits.scatter_add_(1, top, margin.unsqueeze(1))
    ent = scores(logits)[3].numpy()
    z = logits.double().numpy()
    ref = np.array([[[entropy(z[i, :, y, x]) for x in range(16)] for y in range(8)] for i in range(2)])
    assert ref.min() < 1e-15
    np.testing.assert_allclose(ent, ref, rtol=1e-5, atol=0)


def test_edge_confidences_fall_in_the_lower_bin():
    """conf exactly b/15 belongs to bin b-1 ((l, u] rule); conf 0 to no bin; 1 to the last."""
    conf = torch.tensor([[0.0, 1 / 15, 2 / 15, 1 / 3, 0.5, 1.0, 1e-9]], dtype=torch.float32)
    correct = torch.tensor([[True, False, True, True, False, True, True]])
    bins = engine._weighted_bins(conf, correct, torch.ones_like(correct))
    expected = _ece_bins(conf.numpy().ravel(), correct.numpy().ravel())
    assert expected[0].sum() == 6 and expected[0, 0] == 2 and expected[0, 4] == 1 and expected[0, 14] == 1
    np.testing.assert_array_equal(bins[[0, 2]].numpy(), expected[[0, 2]])
    np.testing.assert_allclose(bins[1].numpy(), expected[1], rtol=1e-12)


@pytest.mark.parametrize("n", [1, 5, 1023, 1024, 3001])
def test_spread_bin_sums_match_bincount(n):
    """Sizes around the spread width: the remainder pixels are summed too; skipped values are not."""
    rng = np.random.default_rng(n)
    values = rng.integers(0, 2 * ECE_BINS + 1, n)
    weights = rng.random(n)
    ours = engine._bin_sums(torch.from_numpy(values), torch.from_numpy(weights), ECE_BINS).numpy()
    kept = values < ECE_BINS
    np.testing.assert_allclose(ours, np.bincount(values[kept], weights[kept], minlength=ECE_BINS), rtol=1e-12)


def test_histc_ranges_split_large_histograms_without_gaps():
    """The CUDA path's histc calls tile [0, n) exactly; each fits the per-block shared memory."""
    for n_bins, max_bins in ((30, 12000), (20000, 12000), (24000, 12000), (1444, 6000), (7, 3)):
        ranges = engine._histc_ranges(n_bins, max_bins)
        covered = np.concatenate([np.arange(start, start + size) for start, size in ranges])
        np.testing.assert_array_equal(covered, np.arange(n_bins))
        assert all((size + 1) * 4 + 8 < 48 * 1024 for _, size in ranges if max_bins == 12000)


def test_histc_closed_last_bin_is_dropped():
    """histc's bin arithmetic on integer values (checked on float64 integers on the CPU): a call covering
    [start, start + size) with one extra bin counts each value once and drops the next value's."""
    values = torch.tensor([0, 1, 2, 3, 4, 5, 5, 6, 7, 40], dtype=torch.float64)
    parts = [torch.histc(values, bins=size + 1, min=start, max=start + size + 1)[:size]
             for start, size in engine._histc_ranges(8, 3)]
    np.testing.assert_array_equal(torch.cat(parts).numpy(), np.bincount(values[:-1].long().numpy(), minlength=8))
