"""CPU cost of the RbA fine-tune's data loader per sample, and the optimiser steps/s it allows (#33 item 2).

The ood_detection stage's fine-tune (`stages.ood_detection.rba.finetune`) builds every sample on the host:
decode a 1024x2048 Cityscapes train PNG and its label, RbA's multi-scale resize (short side 512..2048), crop
512x1024, SSD colour augmentation, flip, and with `mix_prob` an outlier (the synthetic OOD-object set, whole
image), then `collate_outliers` stacks a batch of 16. This times that code (`OutlierMixDataset`, the stage's
own) in this process, one sample after another (one worker's cost), on procedural images in the real layout
(benchmarks/stage_bench.py's writers), and prints ms/sample per part and the step/s ceiling that W loader
workers set at the batch size: W * 1000 / (ms/sample * batch) (workers scale until the cores run out). Compare
it with the GPU's step rate (`python -m benchmarks.run throughput --stages rba_swin_b`, GPU-resident batches).

    python -m benchmarks.run rbaloader                      # 24 samples, batch 16, workers 1 2 4 8 15
    python -m benchmarks.run rbaloader --samples 48 --gpu-step-s 1.63

With --out or $OUT set it writes `rba_loader_<cpu>.json` (1024x2048 images only), naming the CPU and the GPU beside
it: the budget's RbA fine-tune rows quote the loader's ceiling from it (benchmarks/budget.py, rba_loader_cost).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_train_set(root: Path, n_city: int, n_ood: int, size=(1024, 2048), seed: int = 0) -> dict:
    """Cityscapes `train` and an OOD-object set at `size` under `root` (stage_bench's writers); their roots."""
    from benchmarks.stage_bench import CITY, _label_ids, _smooth_image, _write_ood_set
    from synthrel.data.io import write_png

    h, w = size
    block, rng = max(4, h // 64), np.random.default_rng(seed)
    city = root / "cityscapes"
    for i in range(n_city):
        stem = f"{CITY}_000000_{i:06d}"
        write_png(city / "leftImg8bit" / "train" / CITY / f"{stem}_leftImg8bit.png", _smooth_image(rng, h, w))
        write_png(city / "gtFine" / "train" / CITY / f"{stem}_gtFine_labelIds.png", _label_ids(rng, h, w, block))
    _write_ood_set(root / "ood_objects", n_ood, rng, h, w, block)
    return {"cityscapes": city, "ood_objects": root / "ood_objects"}


def loader_dataset(roots: dict, num_samples: int, seed: int = 0):
    """The stage's OutlierMixDataset with its defaults (finetune_settings: RbA's crop, sizes, colour aug, flip)."""
    from synthrel.data.cityscapes import CityscapesDataset
    from synthrel.data.synthetic import OODObjectsDataset
    from synthrel.ood_detection.job import finetune_settings
    from synthrel.ood_detection.outliers import OutlierMixDataset

    ft = finetune_settings({})
    inliers = CityscapesDataset(roots["cityscapes"], split="train")
    outliers = OODObjectsDataset(roots["ood_objects"])
    return OutlierMixDataset(inliers, outliers, None, mix_prob=ft["mix_prob"], seed=seed, num_samples=num_samples,
                             crop_size=ft["crop_size"], flip=ft["flip"], min_sizes=ft["min_sizes"],
                             max_size=ft["max_size"], color_aug=ft["color_aug"],
                             synthetic_mode=ft["synthetic_mode"]), ft


def measure(data, batch: int) -> dict:
    """ms per sample of reading (dataset decode + label lookup) and of the whole sample, and of collating."""
    from synthrel.ood_detection.outliers import collate_outliers

    data[0]  # warm-up: imports, OpenCV's first calls
    read = total = 0.0
    samples = []
    for index in range(1, len(data)):
        start = time.perf_counter()
        data.inliers[index % len(data.inliers)]
        read += time.perf_counter() - start
        start = time.perf_counter()
        samples.append(data[index])
        total += time.perf_counter() - start
    n = len(data) - 1
    batches = [samples[i:i + batch] for i in range(0, n - batch + 1, batch)] or [samples]
    collate_outliers(batches[0])  # warm-up: its first call imports the RbA module (transformers, Lightning)
    start = time.perf_counter()
    for chunk in batches:
        collate_outliers(chunk)
    collate_ms = 1000 * (time.perf_counter() - start) / sum(map(len, batches))
    return {"samples": n, "read_ms": 1000 * read / n, "sample_ms": 1000 * total / n, "collate_ms": collate_ms}


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run rbaloader", description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=24, help="timed samples (default 24)")
    p.add_argument("--images", type=int, default=6, help="Cityscapes train images written (default 6)")
    p.add_argument("--batch", type=int, default=None, help="samples per step (default: the stage's, 16)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 15])
    p.add_argument("--size", type=int, nargs=2, default=[1024, 2048], help="H W of the written images")
    p.add_argument("--gpu-step-s", type=float, default=None, help="the GPU's steps/s to compare with")
    p.add_argument("--out", default=None, help="folder for the JSON (default $OUT; none: print only)")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rba_loader_") as tmp:
        roots = write_train_set(Path(tmp), args.images, 4, tuple(args.size))
        data, ft = loader_dataset(roots, args.samples + 1)
        batch = args.batch or ft["batch_size"]
        res = measure(data, batch)
    per_sample = res["sample_ms"] + (0 if np.isnan(res["collate_ms"]) else res["collate_ms"])
    res["batch"] = batch
    res["ceiling_step_s"] = {w: w * 1000 / (per_sample * batch) for w in args.workers}
    print(f"RbA fine-tune loader, one worker: {res['sample_ms']:.1f} ms/sample ({res['read_ms']:.1f} ms decoding "
          f"the Cityscapes image + label), collate {res['collate_ms']:.1f} ms/sample, over {res['samples']} samples")
    for w, rate in res["ceiling_step_s"].items():
        note = f" ({rate / args.gpu_step_s:.2f}x the GPU's {args.gpu_step_s} step/s)" if args.gpu_step_s else ""
        print(f"  {w:>2} worker(s): at most {rate:.2f} step/s at batch {batch}{note}")
    if tuple(args.size) == (1024, 2048) and (args.out or os.environ.get("OUT")):
        import torch

        from benchmarks import write_result
        from synthrel.runtime import usable_cores

        res.update(cpu=cpu_name(), cores=usable_cores(), size=list(args.size),
                   gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                   command="python -m benchmarks.run rbaloader " + " ".join(argv))
        name = f"rba_loader_{re.sub(r'[^a-z0-9]+', '_', res['cpu'].lower()).strip('_')[:40]}.json"
        print("wrote", write_result(res, name, Path(args.out) / name if args.out else None))
    return res


if __name__ == "__main__":
    main()
