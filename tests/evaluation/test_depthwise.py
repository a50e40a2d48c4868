"""Depthwise convolutions as shifted sums against torch's own convolution."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synthrel.zoo.depthwise import depthwise_conv_by_shifts, is_shiftable_depthwise, use_shifted_depthwise


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


def test_only_stride1_symmetric_depthwise_convs_are_routed():
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8),  # routed
        nn.Conv2d(8, 8, 3, padding=1),  # dense: kept
        nn.Conv2d(8, 8, 3, padding=1, stride=2, groups=8),  # strided: kept
        nn.Conv2d(8, 16, 3, padding=1, groups=8),  # channel multiplier: kept
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),  # routed
    ).eval()
    assert [is_shiftable_depthwise(m) for m in model] == [True, False, False, False, True]
    x = torch.randn(1, 8, 20, 20)
    with torch.no_grad():
        ref = model(x)
        keys = list(model.state_dict())
        assert use_shifted_depthwise(model) == 2
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    assert list(model.state_dict()) == keys
