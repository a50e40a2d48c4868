"""Depthwise (dilated) convolutions on the GPU: cuDNN channels-last against the alternatives.

The separable ASPP head of DeepLabV3+ spends 35-43 % of its bf16 pass in cuDNN's
`conv2d_grouped_direct_kernel` (benchmarks/eval_profile.py --kernels). This times one such convolution per
layout/backend and reports milliseconds and the error against an fp32 reference:

    python -m benchmarks.depthwise_probe
"""

from __future__ import annotations

import functools
import json

import torch
import torch.nn.functional as F

from benchmarks import write_result

#: (name, input shape, kernel, dilation): DeepLabV3+ ASPP on 16 crops of 769, a ConvNeXt-like 7x7
SHAPES = [("aspp_d12", (16, 2048, 97, 97), 3, 12), ("aspp_d36", (16, 2048, 97, 97), 3, 36),
          ("convnext_7x7", (8, 512, 64, 128), 7, 1)]


def timed(fn, repeats: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main(argv=None) -> dict:
    from synthrel.zoo.depthwise import depthwise_conv_by_shifts

    device = torch.device("cuda")
    out = {}
    for name, shape, k, d in SHAPES:
        gen = torch.Generator(device=device).manual_seed(0)
        x32 = torch.randn(shape, device=device, generator=gen)
        w32 = torch.randn(shape[1], 1, k, k, device=device, generator=gen) / k
        b32 = torch.randn(shape[1], device=device, generator=gen)
        pad = d * (k // 2)
        ref = F.conv2d(x32, w32, b32, padding=pad, dilation=d, groups=shape[1])
        x, w, b = x32.bfloat16(), w32.bfloat16(), b32.bfloat16()
        xl = x.contiguous(memory_format=torch.channels_last)
        conv = functools.partial(F.conv2d, weight=w, bias=b, padding=pad, dilation=d, groups=shape[1])
        shifts = functools.partial(depthwise_conv_by_shifts, weight=w, bias=b, padding=pad, dilation=d)
        variants = {"cudnn_nhwc": (conv, xl, True), "cudnn_nchw": (conv, x, True), "aten_nchw": (conv, x, False),
                    "shifts_eager": (shifts, xl, True), "shifts_compiled": (torch.compile(shifts), xl, True)}
        res = {}
        for label, (fn, inp, cudnn) in variants.items():
            with torch.backends.cudnn.flags(enabled=cudnn, benchmark=True, deterministic=False, allow_tf32=True):
                run = functools.partial(fn, inp)
                res[label] = {"ms": round(timed(run), 3),
                              "max_abs_err": round(float((run().float() - ref).abs().max()), 4)}
        out[name] = res
        print(name, json.dumps(res), flush=True)
    write_result(out, "depthwise_probe.json")
    return out


if __name__ == "__main__":
    main()
