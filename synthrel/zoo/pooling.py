"""Adaptive average pooling of channels-last maps, which ATen runs on a handful of thread blocks.

ATen's channels-last adaptive_avg_pool2d kernel gives each output pixel (of each image) its thread blocks, which
loop over the whole window: PSPNet's pyramid pooling (bins 1, 2, 3 and 6 of a 97x97 map, 16 crops of 769) gets
16 to 576 blocks for a GPU of 132 SMs, and took 33 % of PSPNet-R18's device time, compiled, on an H200
(adaptive_average_pool_nhwc in docs/bench_results/eval_profile_pspnet_update_kernels_h200.json; inductor falls
back to the ATen kernel for windows this large). Here each output bin is the mean of its window, a reduction
over the window that all of the GPU shares, accumulated in fp32 as ATen accumulates (same values up to the
order of the additions). Windows are ATen's: bin i of n over a length L spans [floor(i L / n), ceil((i+1) L / n)).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


def _output_size(size, height: int, width: int) -> tuple[int, int]:
    oh, ow = (size, size) if isinstance(size, int) else tuple(size)
    return (height if oh is None else oh), (width if ow is None else ow)


def _windows(length: int, bins: int) -> list[tuple[int, int]]:
    return [(i * length // bins, -(-(i + 1) * length // bins)) for i in range(bins)]


def adaptive_avg_pool_by_windows(x: torch.Tensor, size) -> torch.Tensor:
    """`F.adaptive_avg_pool2d(x, size)` for (N, C, H, W) `x`, each bin a fp32 mean over its window, returned in
    `x`'s dtype and memory format."""
    height, width = x.shape[-2:]
    oh, ow = _output_size(size, height, width)
    bins = [x[:, :, h0:h1, w0:w1].mean(dim=(2, 3), dtype=torch.float32)
            for h0, h1 in _windows(height, oh) for w0, w1 in _windows(width, ow)]
    out = torch.stack(bins, dim=-1).view(*x.shape[:2], oh, ow).to(x.dtype)
    return out.contiguous(memory_format=torch.channels_last) if _channels_last(x) else out


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def reroute_adaptive_pooling(model: nn.Module) -> int:
    """Route every AdaptiveAvgPool2d of `model` to `adaptive_avg_pool_by_windows` for channels-last inputs
    (forward attributes: the state_dict is untouched); returns how many were routed."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.AdaptiveAvgPool2d):
            module.forward = functools.partial(_adaptive_avg_pool_forward, module)
            count += 1
    return count


def _adaptive_avg_pool_forward(module: nn.AdaptiveAvgPool2d, x: torch.Tensor) -> torch.Tensor:
    if _channels_last(x):
        return adaptive_avg_pool_by_windows(x, module.output_size)
    return F.adaptive_avg_pool2d(x, module.output_size)
