"""synthrel.zoo.pooling: adaptive average pooling of channels-last maps by window means, against torch's own
adaptive_avg_pool2d (float64 and bf16) and on a tiny PSPNet (pyramid pooling) against the plain model."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthrel.zoo.pooling import adaptive_avg_pool_by_windows, reroute_adaptive_pooling


@pytest.mark.parametrize(("shape", "size"), [((2, 3, 97, 97), 1), ((2, 3, 97, 97), 2), ((2, 3, 97, 97), 3),
                                             ((2, 3, 97, 97), 6), ((1, 4, 13, 7), (4, 3)), ((1, 2, 9, 11), (None, 5)),
                                             ((1, 2, 5, 5), 7)])
def test_window_means_equal_torch_in_float64(shape, size):
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    # fp32 accumulation of float64 values: agreement to fp32 rounding
    torch.testing.assert_close(adaptive_avg_pool_by_windows(x, size), F.adaptive_avg_pool2d(x, size),
                               rtol=1e-6, atol=1e-6)


def test_bf16_channels_last_keeps_dtype_format_and_torchs_values():
    x = (torch.randn(3, 8, 97, 97) * 40).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    for size in (1, 2, 3, 6):
        ours, ref = adaptive_avg_pool_by_windows(x, size), F.adaptive_avg_pool2d(x, size)
        assert ours.dtype == torch.bfloat16 and ours.shape == ref.shape
        assert ours.is_contiguous(memory_format=torch.channels_last)
        exact = F.adaptive_avg_pool2d(x.double(), size)  # the exact means; both within one bf16 rounding of them
        torch.testing.assert_close(ours.double(), exact, rtol=2 ** -8, atol=1e-6)
        torch.testing.assert_close(ours, ref, rtol=2 ** -7, atol=1e-6)


def test_reroute_routes_only_channels_last_inputs(monkeypatch):
    import synthrel.zoo.pooling as pooling

    pool = torch.nn.AdaptiveAvgPool2d(3)
    assert reroute_adaptive_pooling(torch.nn.Sequential(pool, torch.nn.ReLU())) == 1
    calls, real = [], pooling.adaptive_avg_pool_by_windows
    monkeypatch.setattr(pooling, "adaptive_avg_pool_by_windows", lambda x, size: calls.append(size) or real(x, size))
    x = torch.randn(1, 4, 10, 10)
    torch.testing.assert_close(pool(x), F.adaptive_avg_pool2d(x, 3))
    assert calls == []  # NCHW: torch's kernel
    pool(x.contiguous(memory_format=torch.channels_last))
    assert calls == [3]


def test_rerouted_pspnet_keeps_its_logits(tmp_path, monkeypatch):
    """The tiny PSPNet's pyramid pooling rerouted (as on CUDA at reduced precision, with channels-last)."""
    from synthrel.tiny.segmentation import ensure_tiny_segmenter
    from synthrel.zoo.predictor import MMSegSegmenter
    from synthrel.zoo.registry import ZooEntry

    folder = ensure_tiny_segmenter("pspnet_r18", tmp_path / "psp")
    entry = ZooEntry(key="m", family="f", config=str(folder / "config.py"), checkpoint=str(folder / "checkpoint.pth"))
    plain = MMSegSegmenter(entry, "cpu", channels_last=True, reroute_pooling=False)
    rerouted = MMSegSegmenter(entry, "cpu", channels_last=True)  # default: on with channels-last
    assert rerouted.reroute_pooling and not MMSegSegmenter(entry, "cpu").reroute_pooling  # CPU fp32 default: off
    pools = [m for m in rerouted.model.modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d)]
    assert pools and all(m.forward.__class__.__name__ == "partial" for m in pools)
    assert rerouted.model.state_dict().keys() == plain.model.state_dict().keys()
    import synthrel.zoo.pooling as pooling

    calls, real = [], pooling.adaptive_avg_pool_by_windows
    monkeypatch.setattr(pooling, "adaptive_avg_pool_by_windows", lambda x, size: calls.append(size) or real(x, size))
    images = np.random.default_rng(7).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)
    torch.testing.assert_close(rerouted.logits(images), plain.logits(images), atol=1e-4, rtol=1e-4)
    assert sorted(set(calls)) == [1, 2, 3, 6]  # the pyramid's four scales took the window means
