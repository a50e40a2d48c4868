"""Dilated depthwise convolutions, which cuDNN runs slowly in channels-last.

cuDNN takes 13-16 ms for one dilated 3x3 depthwise convolution of DeepLabV3+'s separable ASPP head on 16 crops
of 769 in bf16 channels-last, 35-43 % of that model's pass, against 2.9 ms in NCHW and 1.2-2.0 ms as one
fused kernel of shifted sums (benchmarks/depthwise_probe.py, docs/benchmarks.md); undilated depthwise
convolutions are fast in channels-last (0.34 ms for a ConvNeXt 7x7) and are left alone. A stride-1 depthwise
convolution is the sum over its k x k taps of the input shifted by the tap's offset and scaled per channel:
under torch.compile it is written that way, which inductor fuses into one kernel; in eager mode the
convolution runs in NCHW. Taps are accumulated in fp32, as cuDNN accumulates.
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


def is_dilated_depthwise(module: nn.Module) -> bool:
    """A dilated, stride-1, zero-padded, symmetric depthwise Conv2d (one filter per channel)."""
    return (isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
            == module.out_channels and module.stride == (1, 1) and module.padding_mode == "zeros"
            and not isinstance(module.padding, str) and len(set(module.padding)) == 1
            and len(set(module.dilation)) == 1 and module.dilation[0] > 1)


def reroute_dilated_depthwise(model: nn.Module) -> int:
    """Route every dilated depthwise Conv2d of `model` around cuDNN's channels-last kernel (forward attributes:
    the state_dict is untouched); returns how many were routed."""
    count = 0
    for module in model.modules():
        if is_dilated_depthwise(module):
            module.forward = functools.partial(_dilated_depthwise_forward, module)
            count += 1
    return count


def _dilated_depthwise_forward(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    padding, dilation = module.padding[0], module.dilation[0]
    if torch.compiler.is_compiling():
        return depthwise_conv_by_shifts(x, module.weight, module.bias, padding, dilation)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out = F.conv2d(x.contiguous(), module.weight, module.bias, padding=padding, dilation=dilation,
                   groups=module.groups)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
