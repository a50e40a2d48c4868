"""Where the time of one guided SD1.5/SDXL sampling call goes, by kernel category (torch.profiler, CUDA time).

Runs synthrel's ControlNetSampler without CUDA graphs so that each kernel is visible, eager or (`--compile`)
with ControlNet + UNet and the VAE decoder compiled as the stage runs them; inductor's fused Triton kernels get
their own categories:
    python -m benchmarks.gen_profile --model sd15 --batch 8 --steps 5 [--compile]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch

from benchmarks import write_result
from benchmarks.gen_bench import build_pipeline, make_inputs, negatives

CATEGORIES = (  # first match wins, on the lower-cased kernel name
    ("attention (flash/efficient SDPA)", ("flash", "fmha", "attention", "efficient")),
    ("convolution", ("conv", "implicit_gemm", "cudnn", "xmma_fprop", "sm90_xmma", "nhwc", "winograd")),
    ("matmul (linear)", ("gemm", "cutlass", "matmul", "nvjet")),
    ("group/layer norm", ("norm",)),
    ("elementwise / activation", ("elementwise", "silu", "gelu", "mul", "add", "copy", "vectorized", "unrolled")),
)


def categorise(name: str) -> str:
    low = name.lower()
    if low.startswith("triton_"):  # inductor's kernels are named after every op they fuse (e.g. "convolution")
        return "inductor fused: norm" if "norm" in low else "inductor fused: elementwise"
    for category, keys in CATEGORIES:
        if any(k in low for k in keys):
            return category
    return "other"


def main(argv=None) -> dict:
    from synthrel.generation.sampler import ControlNetSampler

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--compile", action="store_true",
                        help="ControlNet + UNet and the VAE decoder compiled as the stage runs them (no CUDA graphs)")
    args = parser.parse_args(argv)
    device, dtype = torch.device("cuda"), torch.float16
    pipe, case = build_pipeline(args.model, False, device, dtype)
    negative = negatives(case, device, dtype)
    sampler = ControlNetSampler.from_pipeline(pipe, negative_prompt_embeds=negative[0],
                                              negative_pooled_prompt_embeds=negative[1], dtype=dtype,
                                              channels_last=True, inplace=True,
                                              compile="default" if args.compile else None)
    inputs = make_inputs(case, args.batch, device, dtype)

    def call():
        return sampler(inputs["embeds"], inputs["control"], inputs["seeds"], pooled_prompt_embeds=inputs["pooled"],
                       num_inference_steps=args.steps, guidance_scale=case["guidance"],
                       controlnet_conditioning_scale=case["control_scale"])

    call()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    by_category, by_kernel = defaultdict(float), defaultdict(float)
    for event in prof.key_averages():
        t = event.device_time_total if hasattr(event, "device_time_total") else event.cuda_time_total
        if t <= 0:
            continue
        by_category[categorise(event.key)] += t
        by_kernel[event.key[:90]] += t
    total = sum(by_category.values())
    report = {"model": args.model, "batch": args.batch, "steps": args.steps, "compile": args.compile,
              "gpu_ms": round(total / 1e3, 1),
              "share": {k: round(v / total, 3) for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])},
              "top_kernels_ms": {k: round(v / 1e3, 1) for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:15]}}
    print(json.dumps(report, indent=1))
    write_result(report, f"gen_profile_{args.model}{'_compiled' if args.compile else ''}.json")
    return report


if __name__ == "__main__":
    main()
