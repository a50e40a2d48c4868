"""Where an evaluation pass spends its time: loader wait, host time issuing work, device time per phase.

Runs synthrel's engine loop (as `evaluate_dataset`, every metric on) over random 1024x2048 images with one
zoo architecture (random weights) and reports per image: seconds waiting for the DataLoader, host seconds
spent issuing the forward pass and the metric update, device seconds of each (CUDA events, no host sync in
the loop), the wall time, and the top host-side operators of one batch (torch.profiler). A pass whose device
time is close to its wall time is bound by the GPU; one whose wait or issue time is, by the host.

    python -m benchmarks.eval_profile --models pspnet_r18 dlv3p_r101 --workers 0 4 8
    python -m benchmarks.eval_profile --models dlv3p_r101 --workers 4 --kernels [--compile] [--no-ood]
    python -m benchmarks.eval_profile --tiny --size 64 128 --workers 0   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from benchmarks import device_kernels, write_result


def profile_pass(seg, dataset, batch_size: int, workers: int, calib_pixels: int = 20000,
                 compile_metrics: bool = False) -> dict:
    from synthrel.evaluation.engine import OnePassAccumulator, _Collate, _Indexed, _to_device

    cuda = seg.device.type == "cuda"
    loader = torch.utils.data.DataLoader(_Indexed(dataset), batch_size=batch_size, num_workers=workers,
                                         collate_fn=_Collate(0, calib_pixels), pin_memory=cuda,
                                         prefetch_factor=4 if workers else None)
    acc = OnePassAccumulator(seg.device, calib_pixels, 0, compile=compile_metrics)
    events = []
    wait = issue_forward = issue_update = 0.0
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            groups = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        wait += t1 - t0
        for group in groups:
            marks = [torch.cuda.Event(enable_timing=True) for _ in range(3)] if cuda else []
            if marks:
                marks[0].record()
            t2 = time.perf_counter()
            logits, features = seg.logits_and_features(group["image"], features=None)
            t3 = time.perf_counter()
            if marks:
                marks[1].record()
            acc.update(logits, _to_device(group["label"], seg.device), _to_device(group["ood"], seg.device),
                       features, group["indices"], group["ids"], picks=group["picks"])
            t4 = time.perf_counter()
            if marks:
                marks[2].record()
                events.append(marks)
            issue_forward += t3 - t2
            issue_update += t4 - t3
    acc.result()
    wall = time.perf_counter() - start
    n = len(dataset)
    res = {"workers": workers, "img_s": round(n / wall, 2), "wall_ms_per_img": round(1000 * wall / n, 2),
           "loader_wait_ms_per_img": round(1000 * wait / n, 2),
           "issue_forward_ms_per_img": round(1000 * issue_forward / n, 2),
           "issue_update_ms_per_img": round(1000 * issue_update / n, 2)}
    if cuda:
        res["device_forward_ms_per_img"] = round(sum(a.elapsed_time(b) for a, b, _ in events) / n, 2)
        res["device_update_ms_per_img"] = round(sum(b.elapsed_time(c) for _, b, c in events) / n, 2)
    return res


def top_host_ops(seg, image_batch: np.ndarray, rows: int = 15) -> list:
    from torch.profiler import ProfilerActivity, profile

    seg.logits_and_features(image_batch, features=None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if seg.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        seg.logits_and_features(image_batch, features=None)
        if seg.device.type == "cuda":
            torch.cuda.synchronize()
    table = prof.key_averages()
    ops = sorted(table, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    return [{"op": e.key[:80], "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 2),
             "device_ms": round(getattr(e, "self_device_time_total", 0) / 1000, 2)} for e in ops]


def _profile_kernels(call, rows: int) -> tuple[float, list]:
    """Device microseconds of one `call` after a warm-up call, and its `rows` largest CUDA kernels."""
    from torch.profiler import ProfilerActivity, profile

    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    kernels = device_kernels(prof.key_averages())
    top = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:rows]
    return sum(e.self_device_time_total for e in kernels), top


def top_kernels(seg, image_batch: np.ndarray, rows: int = 20) -> dict:
    """Device time of one batch's forward by kernel (CUDA only): total and the largest kernels."""
    total, top = _profile_kernels(lambda: seg.logits_and_features(image_batch, features=None), rows)
    return {"device_ms": round(total / 1000, 2),
            "kernels": [{"kernel": e.key[:110], "calls": e.count, "ms": round(e.self_device_time_total / 1000, 2),
                         "share": round(e.self_device_time_total / total, 3)} for e in top]}


def update_kernels(seg, dataset, batch_size: int, compile_metrics: bool, rows: int = 15) -> dict:
    """Device time of one OnePassAccumulator.update (every metric the dataset carries) by kernel (CUDA only)."""
    from synthrel.evaluation.engine import OnePassAccumulator, _Collate, _Indexed, _to_device

    group = _Collate(0, 20000)([(i, _Indexed(dataset)[i][1]) for i in range(batch_size)])[0]
    logits, _ = seg.logits_and_features(group["image"], features=None)
    label, ood = _to_device(group["label"], seg.device), _to_device(group["ood"], seg.device)
    acc = OnePassAccumulator(seg.device, 20000, 0, compile=compile_metrics)
    total, top = _profile_kernels(lambda: acc.update(logits, label, ood, None, group["indices"], group["ids"],
                                                     picks=group["picks"]), rows)
    return {"device_ms_per_img": round(total / 1000 / batch_size, 3),
            "kernels": [{"kernel": e.key[:110], "calls": e.count, "us": round(e.self_device_time_total, 1),
                         "share": round(e.self_device_time_total / total, 3)} for e in top]}


def main(argv=None) -> dict:
    from benchmarks.eval_bench import (
        MODELS,
        RandomSegmentationSet,
        build_baseline,
        build_synthrel,
        model_config,
    )
    from synthrel.zoo.mmcv_shim import install
    from synthrel.zoo.registry import load_mmseg_config

    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_profile", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--workers", nargs="+", type=int, default=[0, 4, 8])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--n-images", type=int, default=32)
    p.add_argument("--compile", action="store_true", help="compile the model and the metric statistics")
    p.add_argument("--ood", action=argparse.BooleanOptionalAction, default=True,
                   help="images carry OOD masks; --no-ood as Cityscapes/ACDC/synthetic covariate sets")
    p.add_argument("--size", type=int, nargs=2, default=(1024, 2048), help="image height and width")
    p.add_argument("--tiny", action="store_true", help="tiny architectures of the same families (CPU smoke run)")
    p.add_argument("--kernels", action="store_true", help="also list the largest CUDA kernels of one batch")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    install()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = RandomSegmentationSet(args.n_images, *args.size, distinct=4, seed=0, ood=args.ood)
    out = {}
    for name in args.models:
        config_file, family = model_config(name, args.tiny)
        torch.manual_seed(0)
        baseline = build_baseline(load_mmseg_config(config_file), device)
        seg = build_synthrel(config_file, family, baseline, device, args.precision, compile=args.compile)
        del baseline
        warm = RandomSegmentationSet(args.batch_size, *args.size, distinct=1, seed=3, ood=args.ood)
        profile_pass(seg, warm, args.batch_size, 0, compile_metrics=args.compile)
        runs = [profile_pass(seg, dataset, args.batch_size, w, compile_metrics=args.compile) for w in args.workers]
        batch = np.stack([dataset[i]["image"] for i in range(args.batch_size)])
        out[name] = {"precision": args.precision, "compile": args.compile, "ood_masks": args.ood, "runs": runs,
                     "top_host_ops": top_host_ops(seg, batch)}
        if args.kernels and device.type == "cuda":
            out[name]["top_kernels"] = top_kernels(seg, batch)
            out[name]["update_kernels"] = update_kernels(seg, dataset, args.batch_size, args.compile)
        print(json.dumps({name: out[name]}, indent=1), flush=True)
        del seg
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write_result(out, "eval_profile.json", args.json)
    return out


if __name__ == "__main__":
    main()
