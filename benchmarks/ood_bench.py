"""Cost of the exact OOD metrics (issue #18): the evaluation pass with exact OOD accumulation against the
logits-only pass, and the pooled exact counts on a Fishyscapes-sized number of pixels.

`pass` (default): SegFormer-B5 (random weights, mmseg's `init_model` as in eval_bench) on random 1024x2048 images
with OOD masks and no semantic labels, as the OOD sets are evaluated (Road Anomaly has no labels). Side by side
in one process, alternating `--repeats` times: the engine's pass (`evaluate_dataset`: loader, forward, the three
OOD scores, GenVal's per-image metrics from one device sort per image and score, RbA's pooled exact counts) and
the logits-only pass (the same loader and forward, nothing accumulated). Reports img/s of both, the share of the
pass spent on OOD accumulation, 1 - t_logits / t_pass (best of the repeats each), and the milliseconds per image of
`OODAccumulator.update` timed alone on the model's scores.

`pooled`: `PooledOODCounts` fed `--pixels` synthetic float32 scores (default 200 M) in batches of `--batch-pixels`,
with MSP-like scores (a third saturated to 1.0, the rest continuous in [1/19, 1]) or max-logit-like ones
(normal, no range bound: the most distinct float32 values). Reports seconds, pixels/s, distinct values, the table's
bytes and the peak memory (process RSS on the CPU, allocator peak on CUDA); `--check-pixels N` compares the metrics
with sklearn on the first N pixels.

    python -m benchmarks.run ood                                  # GPU: SegFormer-B5, 1024x2048, 32 images
    python -m benchmarks.run ood --compile                        # the same, model and statistics compiled
    python -m benchmarks.run ood --tiny --quick                   # CPU smoke test: tiny SegFormer, 64x128
    python -m benchmarks.run ood pooled --device cpu              # 200 M pixels on the CPU
    python -m benchmarks.run ood pooled --device cuda --scores msp max_logit

JSON goes to $OUT/ood_bench.json when OUT is set (or to --json).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from benchmarks import write_result
from benchmarks.eval_bench import (
    MODELS,
    TINY_MODELS,
    RandomSegmentationSet,
    _peak_gib,
    _peak_reset,
    _sync,
    build_baseline,
    build_synthrel,
    logits_only_pass,
    model_config,
)
from synthrel.zoo.registry import load_mmseg_config


class _Unlabelled(torch.utils.data.Dataset):
    """The random set's images and OOD masks without semantic labels, as an OOD benchmark set."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return {**self.dataset[i], "label": None}


def _rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def update_probe(seg, dataset, batch_size: int, repeats: int = 3) -> dict:
    """Milliseconds per image of `OODAccumulator.update` alone (scores from the model's logits, on its device)."""
    from synthrel.evaluation.engine import OOD_SCORES, class_scores
    from synthrel.metrics.ood import OODAccumulator

    n = min(batch_size, len(dataset))
    samples = [dataset[i] for i in range(n)]
    logits, _ = seg.logits_and_features(torch.from_numpy(np.stack([s["image"] for s in samples])),
                                        features=None)
    oods = torch.from_numpy(np.stack([s["ood"] for s in samples])).to(seg.device)
    _, conf, max_logit, entropy = class_scores(logits.float())
    scores = torch.stack([-conf, -max_logit, entropy])
    acc = OODAccumulator(OOD_SCORES, seg.device)
    acc.update(scores, oods)  # warm-up
    _sync(seg.device)
    start = time.perf_counter()
    for _ in range(repeats):
        acc.update(scores, oods)
    _sync(seg.device)
    return {"ood_update_ms_per_img": round(1000 * (time.perf_counter() - start) / (repeats * n), 3)}


def bench_pass(args, device) -> dict:
    from synthrel.evaluation.engine import evaluate_dataset
    from synthrel.zoo.mmcv_shim import install

    install()
    name = args.model
    config_file, family = model_config(name, args.tiny)
    torch.manual_seed(0)
    baseline = build_baseline(load_mmseg_config(config_file), device)
    seg = build_synthrel(config_file, family, baseline, device, args.precision, window_batch=args.window_batch,
                         compile=args.compile)
    del baseline
    dataset = _Unlabelled(RandomSegmentationSet(args.n_images, *args.size, distinct=min(4, args.n_images), seed=0))
    res = {"model": TINY_MODELS[name] if args.tiny else name, "size": list(args.size), "n_images": args.n_images,
           "batch_size": args.batch_size, "precision": args.precision, "num_workers": args.num_workers,
           "compile": args.compile,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    warm = torch.utils.data.Subset(dataset, range(min(len(dataset), args.batch_size)))
    evaluate_dataset(seg, warm, batch_size=args.batch_size, calib_pixels_per_image=0, features=None,
                     desc="warm-up", compile_metrics=args.compile)
    logits_only_pass(seg, warm, args.batch_size, 0)
    _peak_reset(device)
    times = {"pass": [], "logits_only": []}
    for _ in range(args.repeats):
        _sync(device)
        start = time.perf_counter()
        out = evaluate_dataset(seg, dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                               calib_pixels_per_image=0, features=None, desc="pass with exact OOD",
                               compile_metrics=args.compile)
        _sync(device)
        times["pass"].append(time.perf_counter() - start)
        times["logits_only"].append(logits_only_pass(seg, dataset, args.batch_size, args.num_workers))
    best = {k: min(v) for k, v in times.items()}
    res.update({f"{k}_s": [round(t, 3) for t in v] for k, v in times.items()})
    res["pass_img_s"] = round(args.n_images / best["pass"], 3)
    res["logits_only_img_s"] = round(args.n_images / best["logits_only"], 3)
    res["ood_accumulation_share_of_pass"] = round(max(best["pass"] - best["logits_only"], 0.0) / best["pass"], 4)
    res["peak_gib"] = _peak_gib(device) if device.type == "cuda" else _rss_gib()
    res.update(update_probe(seg, dataset, args.batch_size))
    res["ood_update_share_of_pass"] = round(res["ood_update_ms_per_img"] * res["pass_img_s"] / 1000, 4)
    res["rows"] = {k: round(float(v), 6) for k, v in out.ood["pooled"]["msp"].items()}
    print(f"{res['model']} {args.size[0]}x{args.size[1]} {args.precision}{' compiled' if args.compile else ''} on "
          f"{res['device']}: pass with exact OOD "
          f"{res['pass_img_s']} img/s, logits only {res['logits_only_img_s']} img/s, OOD share of the pass "
          f"{100 * res['ood_accumulation_share_of_pass']:.1f} % (update alone {res['ood_update_ms_per_img']} "
          f"ms/img = {100 * res['ood_update_share_of_pass']:.1f} %)", flush=True)
    return res


def _synthetic_scores(kind: str, n: int, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 scores, labels 0 ID / 1 OOD / 255 void) of `n` pixels, higher = more OOD."""
    labels = torch.where(torch.rand(n, generator=gen, device=device) < 0.05, 1, 0).to(torch.uint8)
    labels[torch.rand(n, generator=gen, device=device) < 0.1] = 255
    u = torch.rand(n, generator=gen, device=device)
    if kind == "msp":  # -max softmax: a third saturated at 1.0, the rest in [1/19, 1), OOD less confident
        conf = 1 / 19 + (1 - 1 / 19) * u ** (0.3 + 0.7 * (labels == 1))
        conf = torch.where(torch.rand(n, generator=gen, device=device) < 0.33, 1.0, conf)
        return -conf.float(), labels
    shift = 2.0 * (labels == 1)
    return -(10 + 5 * torch.randn(n, generator=gen, device=device) - shift).float(), labels  # -max logit


def bench_pooled(args, device) -> dict:
    from synthrel.metrics.ood import PooledOODCounts

    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "pixels": args.pixels, "batch_pixels": args.batch_pixels, "scores": {}}
    for kind in args.scores:
        gen = torch.Generator(device=device).manual_seed(0)
        counts = PooledOODCounts(device)
        _peak_reset(device)
        rss_before = _rss_gib()
        check = ([], [])
        generate_s, start = 0.0, time.perf_counter()
        done = 0
        while done < args.pixels:
            n = min(args.batch_pixels, args.pixels - done)
            t0 = time.perf_counter()
            scores, labels = _synthetic_scores(kind, n, gen, device)
            _sync(device)
            generate_s += time.perf_counter() - t0
            if done < args.check_pixels:
                keep = min(n, args.check_pixels - done)
                check[0].append(scores[:keep].cpu().numpy())
                check[1].append(labels[:keep].cpu().numpy())
            counts.update(scores, labels)
            done += n
        metrics = counts.metrics()
        _sync(device)
        seconds = time.perf_counter() - start - generate_s
        entry = {"seconds": round(seconds, 2), "mpixels_s": round(args.pixels / seconds / 1e6, 2),
                 "distinct_values": counts.n_distinct, "table_mib": round(counts.n_distinct * 20 / 2**20, 1),
                 "metrics": {k: round(v, 6) for k, v in metrics.items()}}
        if device.type == "cuda":
            entry["peak_gib"] = _peak_gib(device)
        else:
            entry["peak_rss_gib"] = _rss_gib()
            entry["rss_before_gib"] = rss_before
        if args.check_pixels:
            from sklearn.metrics import auc, average_precision_score, roc_curve

            sub = PooledOODCounts()
            s, y = np.concatenate(check[0]), np.concatenate(check[1])
            sub.update(torch.from_numpy(s), torch.from_numpy(y))
            keep = y <= 1
            fpr, tpr, _ = roc_curve(y[keep], s[keep])
            ref = {"auroc": auc(fpr, tpr), "ap": average_precision_score(y[keep], s[keep]),
                   "fpr95": fpr[np.argmax(tpr > 0.95)]}
            entry["check_max_abs_diff_vs_sklearn"] = max(abs(sub.metrics()[k] - ref[k]) for k in ref)
            entry["check_pixels"] = int(len(s))
        res["scores"][kind] = entry
        print(f"pooled {kind}: {args.pixels / 1e6:.0f} M pixels in {seconds:.1f} s ({entry['mpixels_s']} Mpx/s), "
              f"{entry['distinct_values']} distinct values ({entry['table_mib']} MiB table), peak "
              f"{entry.get('peak_gib', entry.get('peak_rss_gib'))} GiB", flush=True)
        del counts
    return res


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run ood", description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", choices=["pass", "pooled"], default="pass")
    p.add_argument("--model", choices=list(MODELS), default="segformer_b5")
    p.add_argument("--n-images", type=int, default=None, help="images per timed pass (default 32; quick 4)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--window-batch", type=int, default=16)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16")
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model and the metric statistics (`stages.evaluate.compile`)")
    p.add_argument("--repeats", type=int, default=None, help="alternating timed passes of each kind (default 2)")
    p.add_argument("--quick", action="store_true", help="4 images, one repeat")
    p.add_argument("--tiny", action="store_true", help="the tiny stand-in architecture on CPU, 64x128 images")
    p.add_argument("--pixels", type=float, default=200e6, help="pooled: pixels in all (default 200 M)")
    p.add_argument("--batch-pixels", type=int, default=4 * 1024 * 2048, help="pooled: pixels per update")
    p.add_argument("--scores", nargs="+", choices=["msp", "max_logit"], default=["msp"])
    p.add_argument("--check-pixels", type=int, default=0, help="pooled: compare with sklearn on this many pixels")
    p.add_argument("--device", default=None, help="default: cuda if available (cpu with --tiny)")
    p.add_argument("--json", default=None, help="write the JSON here (default $OUT/ood_bench.json)")
    args = p.parse_args(argv)
    args.pixels = int(args.pixels)
    args.n_images = args.n_images or (4 if args.quick or args.tiny else 32)
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.size = (64, 128) if args.tiny else (1024, 2048)
    if args.tiny:
        args.num_workers = min(args.num_workers, 1)
        args.precision = "fp32"
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    res = {args.mode: bench_pass(args, device) if args.mode == "pass" else bench_pooled(args, device)}
    write_result(res, "ood_bench.json", args.json)
    return res


if __name__ == "__main__":
    main()
