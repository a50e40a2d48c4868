"""Writing generated items: the generate stage's write path before and after it left the critical path.

Each generated item is four PNGs (image, labelIds, trainIds, the original crop) and a manifest line. Before,
the stage wrote them at PIL's default zlib level 6 on the sampling thread, between batches; synthrel writes
at level 1 on a `BackgroundWriter` thread while the next batch samples. The GPU is stood in for by a wait of
`--gpu-seconds` per batch (the sampler's measured time: 1.26 s for SD1.5 at batch 8 on the H100,
docs/benchmarks.md): like the sampler's wait on its device-to-host copy, it leaves the writer thread free.
Per mode it reports the loop's seconds per batch, how long the sampling thread spent on writes (the loop minus
the GPU wait) and the bytes per item. Images are smooth 512² RGB content (blurred noise + gradients).

    python -m benchmarks.run write [--batches 6 --batch-size 8 --gpu-seconds 1.26]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import write_result


def make_items(batch_size: int, size: int, seed: int = 0) -> list[dict]:
    import cv2

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 120, size, dtype=np.float32)
    items = []
    for k in range(batch_size):
        noise = cv2.GaussianBlur(rng.integers(0, 136, (size, size, 3), dtype=np.uint8), (7, 7), 2)
        image = (noise + ramp[:, None, None]).astype(np.uint8)
        label = np.kron(rng.integers(0, 34, (size // 16, size // 16), dtype=np.uint8), np.ones((16, 16), np.uint8))
        items.append(dict(id=f"item_{k:03d}", city="aachen", image=image, label_ids=label, original=image[::-1].copy(),
                          meta={"seed": k}))
    return items


def run_mode(mode: str, items: list[dict], batches: int, gpu_seconds: float, root: Path) -> dict:
    import synthrel.data.io as io
    from synthrel.generation.job import _write_items
    from synthrel.jobs import BackgroundWriter

    def records(b):
        return [dict(item, root=str(root), id=f"{item['id']}_{b}") for item in items]

    level, synthrel_level = (6 if mode == "before" else 1), io.PNG_COMPRESS_LEVEL
    io.PNG_COMPRESS_LEVEL = level
    try:
        start = time.perf_counter()
        if mode == "before":
            for b in range(batches):
                time.sleep(gpu_seconds)
                _write_items(records(b))
        else:
            with BackgroundWriter() as writer:
                for b in range(batches):
                    time.sleep(gpu_seconds)
                    writer.submit(_write_items, records(b))
        seconds = (time.perf_counter() - start) / batches
    finally:
        io.PNG_COMPRESS_LEVEL = synthrel_level
    files = list(root.rglob("*.png"))
    return dict(mode=mode, png_level=level, s_per_batch=round(seconds, 3),
                write_s_on_sampling_thread=round(max(seconds - gpu_seconds, 0.0), 3),
                kb_per_item=round(sum(p.stat().st_size for p in files) / 1024 / (batches * len(items)), 1))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run write")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--gpu-seconds", type=float, default=1.26, help="sampling time per batch stood in for")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    items = make_items(args.batch_size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_mode(mode, items, args.batches, args.gpu_seconds, Path(tmp) / mode)
                for mode in ("before", "synthrel")]
    before, after = rows
    result = dict(cpus=os.cpu_count(), args=vars(args), rows=rows,
                  ratio=round(before["s_per_batch"] / after["s_per_batch"], 2))
    for row in rows:
        print(row, flush=True)
    print(f"loop speed-up {result['ratio']}x; writes on the sampling thread per batch: "
          f"{before['write_s_on_sampling_thread']} s -> {after['write_s_on_sampling_thread']} s", flush=True)
    path = write_result(result, "write_bench.json", args.json)
    if path:
        print(f"wrote {path}")
    return result
