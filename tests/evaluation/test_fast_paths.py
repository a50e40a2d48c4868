"""The fast paths of evaluation (issue #9) against mmseg, sklearn and the metrics library on tiny models."""

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from synthrel.evaluation.engine import _confusions, _histogram, _weighted_bins, evaluate_dataset
from synthrel.jobs import item_rng
from synthrel.metrics.calibration import accumulate_bins
from synthrel.tiny.segmentation import ensure_tiny_segmenter
from synthrel.zoo.predictor import MMSegSegmenter, slide_windows
from synthrel.zoo.registry import ZooEntry


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fastzoo")
    return {spec: ensure_tiny_segmenter(spec, root / spec) for spec in ("segformer_b0", "dlv3p_r18")}


def _segmenter(folder, **speed):
    entry = ZooEntry(key="m", family="f", config=str(folder / "config.py"), checkpoint=str(folder / "checkpoint.pth"))
    return MMSegSegmenter(entry, "cpu", **speed)


def test_slide_windows_hand_example():
    # Cityscapes at the 769 configs' test scale: 2 x 4 windows, the last row and column clamped to the image
    windows = slide_windows(1025, 2049, (769, 769), (513, 513))
    assert len(windows) == 8
    assert windows[0] == (0, 769, 0, 769) and windows[1] == (0, 769, 513, 1282)
    assert windows[3] == (0, 769, 1280, 2049) and windows[-1] == (256, 1025, 1280, 2049)
    assert slide_windows(1024, 2048, (1024, 1024), (768, 768)) == [(0, 1024, 0, 1024), (0, 1024, 768, 1792),
                                                                  (0, 1024, 1024, 2048)]
    assert slide_windows(40, 30, (48, 48), (32, 32)) == [(0, 40, 0, 30)]  # crop larger than the image


@pytest.mark.parametrize("spec", ["segformer_b0", "dlv3p_r18"])
@pytest.mark.parametrize("window_batch", [1, 3, 64])
@pytest.mark.parametrize("shape", [(64, 128), (50, 90)])
def test_batched_slide_equals_mmseg_slide_inference(tiny_models, spec, window_batch, shape):
    seg = _segmenter(tiny_models[spec], window_batch=window_batch)
    images = torch.from_numpy(np.random.default_rng(7).integers(0, 256, (3, *shape, 3), dtype=np.uint8))
    inputs, _ = seg._preprocess(images)
    metas = [dict(ori_shape=shape, img_shape=tuple(inputs.shape[2:]), pad_shape=tuple(inputs.shape[2:]))] * 3
    with torch.no_grad():
        ref = seg.model.slide_inference(inputs, metas)  # mmseg's per-window loop
        ours = seg._slide_inference(inputs)[0]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(ours.argmax(1), ref.argmax(1))


def test_window_batch_too_large_for_a_kernel_is_split(tiny_models, monkeypatch):
    """As SETR-PUP on an H200 (upsample_bilinear2d_nhwc over INT_MAX elements): halves give the same logits."""
    seg = _segmenter(tiny_models["segformer_b0"], window_batch=64)
    images = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (3, 64, 128, 3), dtype=np.uint8))
    inputs, _ = seg._preprocess(images)
    with torch.no_grad():
        whole = seg._slide_inference(inputs)[0]
        real, calls = seg.model.encode_decode, []

        def picky(crops, metas):
            calls.append(len(crops))
            if len(crops) > 2:
                raise RuntimeError("upsample_bilinear2d_nhwc only supports output tensors with less than INT_MAX")
            return real(crops, metas)

        monkeypatch.setattr(seg.model, "encode_decode", picky)
        split = seg._slide_inference(inputs)[0]
    assert max(calls) > 2 and sum(n for n in calls if n <= 2) == max(calls)  # every crop ran once, in halves
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_compiled_segmenter_folds_batchnorm_and_keeps_mmseg_logits(tiny_models):
    """compile=True (inductor freezing: eval BatchNorm folded into the convolutions) against mmseg's own
    slide inference of the uncompiled model."""
    plain = _segmenter(tiny_models["dlv3p_r18"])
    compiled = _segmenter(tiny_models["dlv3p_r18"], compile=True)
    images = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8))
    inputs, _ = plain._preprocess(images)
    metas = [dict(ori_shape=(64, 128), img_shape=tuple(inputs.shape[2:]), pad_shape=tuple(inputs.shape[2:]))] * 2
    with torch.no_grad():
        ref = plain.model.slide_inference(inputs, metas)
    ours = compiled.logits(images)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(ours.argmax(1), ref.argmax(1))


@pytest.mark.slow
def test_compiled_head_keeps_one_graph_where_mmseg_warns(tiny_models):
    """mmseg's resize() warns in heads with align_corners=True (the Cityscapes 769 configs); a graph break
    there made dynamo recompile on every call until its limit, then run the head eager (PSPNet on an H200)."""
    plain = _segmenter(tiny_models["dlv3p_r18"])
    compiled = _segmenter(tiny_models["dlv3p_r18"], compile=True)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        feats = plain.model.backbone(x)
        with pytest.warns(UserWarning, match="align_corners=True"):  # this size reaches the warning
            ref = plain.model.decode_head(feats)
        torch._dynamo.utils.counters.clear()
        ours = compiled.model.decode_head(feats)
    assert not torch._dynamo.utils.counters["graph_break"]
    assert warnings.warn not in torch._dynamo.config.reorderable_logging_functions  # scoped to these forwards
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_rerouted_dilated_depthwise_keeps_mmseg_logits(tiny_models):
    """The separable ASPP's dilated depthwise convolutions rerouted (as on CUDA at reduced precision)."""
    from synthrel.zoo.depthwise import is_dilated_depthwise

    plain = _segmenter(tiny_models["dlv3p_r18"])
    rerouted = _segmenter(tiny_models["dlv3p_r18"], reroute_depthwise=True, channels_last=True)
    routed = [m for m in rerouted.model.modules() if is_dilated_depthwise(m)]
    assert routed and all(m.forward.__class__.__name__ == "partial" for m in routed)
    images = np.random.default_rng(6).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)
    torch.testing.assert_close(rerouted.logits(images), plain.logits(images), atol=1e-4, rtol=1e-4)


def test_cudnn_benchmark_is_scoped_to_the_forward(tiny_models, monkeypatch):
    from synthrel import runtime

    seg = _segmenter(tiny_models["dlv3p_r18"], cudnn_benchmark=True)
    assert not _segmenter(tiny_models["dlv3p_r18"]).cudnn_benchmark  # CPU default: off
    seen = []
    real = seg.model.encode_decode
    monkeypatch.setattr(seg.model, "encode_decode",
                        lambda *a: seen.append(torch.backends.cudnn.benchmark) or real(*a))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    seg.logits(np.zeros((1, 64, 128, 3), np.uint8))
    assert seen and all(seen) and torch.backends.cudnn.benchmark is False
    with pytest.raises(RuntimeError), runtime.cudnn_benchmark(True):
        raise RuntimeError("restored even on error")
    assert torch.backends.cudnn.benchmark is False


def test_sync_free_confusion_and_bins_match_sklearn_and_library():
    rng = np.random.default_rng(3)
    pred = torch.from_numpy(rng.integers(0, 19, (3, 20, 30)))
    labels = torch.from_numpy(rng.integers(0, 19, (3, 20, 30)))
    labels[:, :4] = 255
    per_image = _confusions(pred, labels)
    for b in range(3):
        valid = labels[b] != 255
        ref = confusion_matrix(labels[b][valid].numpy(), pred[b][valid].numpy(), labels=list(range(19)))
        np.testing.assert_array_equal(per_image[b].numpy(), ref)
    conf = torch.from_numpy(rng.random((3, 20, 30))).float()
    conf[0, 5, :3] = torch.tensor([0.0, 1 / 15, 1.0])  # no bin, a bin edge ((l, u] rule), the top
    correct = pred == labels
    valid = labels != 255
    ours = _weighted_bins(conf, correct, valid)
    torch.testing.assert_close(ours, accumulate_bins(conf[valid], correct[valid]), rtol=1e-12, atol=1e-9)
    idx = torch.from_numpy(rng.integers(0, 50, 1000))
    keep = torch.from_numpy(rng.random(1000) < 0.7)
    np.testing.assert_array_equal(_histogram(idx, keep, 50).numpy(), np.bincount(idx[keep].numpy(), minlength=50))


class _MemorySet:
    def __init__(self, shapes, seed=0):
        rng = np.random.default_rng(seed)
        self.samples = []
        for i, (h, w) in enumerate(shapes):
            label = rng.integers(0, 19, (h, w)).astype(np.uint8)
            label[: h // 4] = 255
            self.samples.append(dict(id=f"s{i}", image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                                     label=label, ood=None))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_worker_drawn_calibration_sample_is_the_relis_draw(tiny_models):
    """Pixels drawn in a DataLoader worker: the seeded np choice(H*W, k) per image, ignore dropped after it."""
    seg = _segmenter(tiny_models["dlv3p_r18"], window_batch=5)
    ds = _MemorySet([(64, 128), (50, 90), (64, 128)])
    k, seed = 300, 11
    out = evaluate_dataset(seg, ds, batch_size=2, num_workers=1, calib_pixels_per_image=k, seed=seed,
                           features="windows")
    logits, labels, image_index = [], [], []
    for i, s in enumerate(ds.samples):
        z = seg.logits(s["image"][None])[0].flatten(1).T.numpy()
        picks = item_rng(seed, i, "calib").choice(z.shape[0], k, replace=False)
        keep = s["label"].ravel()[picks] != 255
        logits.append(z[picks][keep])
        labels.append(s["label"].ravel()[picks][keep])
        image_index.append(np.full(keep.sum(), i))
    np.testing.assert_allclose(out.calib["logits"], np.concatenate(logits), atol=1e-5)
    np.testing.assert_array_equal(out.calib["labels"], np.concatenate(labels))
    np.testing.assert_array_equal(out.calib["image_index"], np.concatenate(image_index))
    assert out.features.shape[0] == 3


def test_eval_bench_tiny_smoke(tmp_path):
    from benchmarks.eval_bench import main

    path = tmp_path / "bench.json"
    res = main(["--tiny", "--quick", "--models", "dlv3p_r101", "--precisions", "fp32", "--json", str(path)])
    assert json.loads(path.read_text()).keys() == res.keys() == {"dlv3p_r101"}
    run = res["dlv3p_r101"]["runs"][0]
    assert run["precision"] == "fp32" and run["img_s"] > 0 and res["dlv3p_r101"]["mmseg_loop"]["img_s"] > 0
    assert run["confusion_equal_to_mmseg"] and run["argmax_diff_pixels_vs_mmseg"] == 0
    assert run["slide_vs_mmseg_same_input"]["rel_l2"] < 1e-6  # fp32 rounding of other batch sizes at most
    assert run["slide_vs_mmseg_same_input"]["argmax_diff_pixels"] == 0
    assert 0 <= run["accumulation_share_of_pass"] <= 1 and res["dlv3p_r101"]["tflop_per_img"] > 0


@pytest.mark.parametrize("host_resize", [True, False])
def test_test_scale_resize_host_exact_device_within_one_level(tiny_models, host_resize):
    """host_resize: the network input is mmcv.imresize's (cv2 bilinear on uint8) exactly; on the device it is
    within one grey level of it."""
    import cv2

    seg = _segmenter(tiny_models["dlv3p_r18"], host_resize=host_resize)
    seg.test_scale = (97, 61)  # keep-ratio: 45 x 90 -> 49 x 97 (mmcv rescale_size rounds 48.5 up)
    images = np.random.default_rng(8).integers(0, 256, (2, 45, 90, 3), dtype=np.uint8)
    x, size = seg._preprocess(images)
    assert size == (45, 90) and tuple(x.shape[-2:]) == (49, 97)
    pre = seg.model.data_preprocessor
    reference = np.stack([cv2.resize(im, (97, 49), interpolation=cv2.INTER_LINEAR) for im in images])
    if not pre.channel_conversion:
        reference = reference[..., ::-1]
    ours = (x * pre.std + pre.mean).permute(0, 2, 3, 1).round().numpy()
    diff = np.abs(ours - reference.astype(np.float32))
    assert diff.max() == 0 if host_resize else diff.max() <= 1


def test_eval_profile_smoke_on_cpu(tmp_path):
    """benchmarks/eval_profile.py on a tiny PSPNet, CPU."""
    from benchmarks.eval_profile import main

    path = tmp_path / "profile.json"
    res = main(["--models", "pspnet_r18", "--tiny", "--precision", "fp32", "--workers", "0", "--n-images", "2",
                "--batch-size", "2", "--size", "64", "128", "--json", str(path)])
    (run,) = res["pspnet_r18"]["runs"]
    assert json.loads(path.read_text()) == res
    assert run["img_s"] > 0 and run["wall_ms_per_img"] >= run["issue_forward_ms_per_img"] > 0
    assert res["pspnet_r18"]["top_host_ops"] and "device_forward_ms_per_img" not in run  # CPU: no CUDA events


def test_graph_breaks_benchmark_finds_mmseg_resize_warning(tmp_path):
    """benchmarks/graph_breaks.py on a tiny DeepLabV3+ (align_corners head), CPU: the break at mmseg's warning."""
    from benchmarks.graph_breaks import main

    res = main(["--models", "dlv3p_r101", "--tiny", "--json", str(tmp_path / "breaks.json")])
    head = res["dlv3p_r101"]["decode_head"]
    assert res["dlv3p_r101"]["backbone"]["breaks"] == 0
    assert head["breaks"] >= 1 and any("wrappers.py" in reason for reason in head["reasons"])


@pytest.mark.parametrize("bad", [np.zeros((64, 128, 3), np.uint8), np.zeros((1, 64, 128, 3), np.float32),
                                 torch.zeros(1, 3, 64, 128, dtype=torch.uint8)])
def test_a_malformed_image_batch_is_named(tiny_models, bad):
    seg = _segmenter(tiny_models["dlv3p_r18"], host_resize=True)
    with pytest.raises(ValueError, match=r"expected a uint8 \(B, H, W, 3\) image batch, got"):
        seg.logits(bad)
