"""Depthwise convolutions as shifted sums against torch's own convolution."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synthrel.zoo.depthwise import depthwise_conv_by_shifts, is_dilated_depthwise, reroute_dilated_depthwise


@pytest.mark.parametrize(("kernel", "dilation", "bias"), [(3, 1, True), (3, 12, False), (3, 5, True), (7, 1, True)])
def test_shifted_sum_is_the_convolution(kernel, dilation, bias):
    gen = torch.Generator().manual_seed(kernel * 100 + dilation)
    x = torch.randn(2, 6, 17, 23, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 1, kernel, kernel, generator=gen, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64) if bias else None
    pad = dilation * (kernel // 2)
    ref = F.conv2d(x, w, b, padding=pad, dilation=dilation, groups=6)
    ours = depthwise_conv_by_shifts(x.float(), w.float(), None if b is None else b.float(), pad, dilation)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)


def test_only_dilated_stride1_depthwise_convs_are_rerouted(monkeypatch):
    from synthrel.zoo import depthwise

    traced = []
    real = depthwise.depthwise_conv_by_shifts
    monkeypatch.setattr(depthwise, "depthwise_conv_by_shifts", lambda *a: traced.append(1) or real(*a))
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8),  # rerouted
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # undilated depthwise: cuDNN is fast, kept
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),  # dense: kept
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, stride=2, groups=8),  # strided: kept
        nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=8),  # channel multiplier: kept
        nn.Conv2d(16, 16, 3, padding=12, dilation=12, groups=16, bias=False),  # rerouted
    ).eval()
    assert [is_dilated_depthwise(m) for m in model] == [True, False, False, False, False, True]
    x = torch.randn(1, 8, 30, 30).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x)
        keys = list(model.state_dict())
        assert reroute_dilated_depthwise(model) == 2
        eager = model(x)  # NCHW convolution, channels-last again after
        assert not traced
        compiled = torch.compile(model, backend="aot_eager")(x)  # shifted sums while compiling
    assert len(traced) == 2 and list(model.state_dict()) == keys
    torch.testing.assert_close(eager, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled, ref, atol=1e-5, rtol=1e-5)
    routed = model[0]
    with torch.no_grad():
        out = routed(x[:, :8])
    assert out.is_contiguous(memory_format=torch.channels_last)
