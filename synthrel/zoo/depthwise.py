"""Depthwise convolutions as sums of shifted inputs, for the GPU where cuDNN's kernel for them is slow.

cuDNN runs channels-last depthwise (dilated) convolutions with a direct kernel far from memory speed: in
DeepLabV3+'s separable ASPP head it takes 35-43 % of the bf16 pass (benchmarks/depthwise_probe.py and
docs/benchmarks.md). A stride-1 depthwise convolution is a sum over its k x k taps of the input shifted by the
tap's offset and scaled per channel; written that way it is elementwise work that inductor fuses into one
kernel. Taps are accumulated in fp32, as cuDNN accumulates.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


def depthwise_conv_by_shifts(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                             dilation: int) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=C)` for stride 1, weight (C, 1, k, k)."""
    kh, kw = weight.shape[-2:]
    out_h = x.shape[-2] + 2 * padding - dilation * (kh - 1)
    out_w = x.shape[-1] + 2 * padding - dilation * (kw - 1)
    padded = F.pad(x, (padding,) * 4)
    taps = weight.float().flatten(1)  # (C, k*k)
    acc = None
    for i in range(kh):
        for j in range(kw):
            shifted = padded[:, :, i * dilation:i * dilation + out_h, j * dilation:j * dilation + out_w]
            term = shifted.float() * taps[:, i * kw + j].view(1, -1, 1, 1)
            acc = term if acc is None else acc + term
    if bias is not None:
        acc = acc + bias.float().view(1, -1, 1, 1)
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    return acc.to(dtype)


def is_shiftable_depthwise(module: nn.Module) -> bool:
    """A stride-1, zero-padded, symmetric depthwise Conv2d (one filter per channel)."""
    return (isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
            == module.out_channels and module.stride == (1, 1) and module.padding_mode == "zeros"
            and not isinstance(module.padding, str) and len(set(module.padding)) == 1
            and len(set(module.dilation)) == 1)


def use_shifted_depthwise(model: nn.Module) -> int:
    """Route every shiftable depthwise Conv2d of `model` through `depthwise_conv_by_shifts` (forward attributes:
    the state_dict is untouched); returns how many were routed."""
    count = 0
    for module in model.modules():
        if is_shiftable_depthwise(module):
            module.forward = functools.partial(_shifted_forward, module)
            count += 1
    return count


def _shifted_forward(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return depthwise_conv_by_shifts(x, module.weight, module.bias, module.padding[0], module.dilation[0])
