"""Does torch.compile of the per-image OOD curves build, and pay, on this GPU? Three variants of the row cumsum
against the eager curves, on 4 rows of 1024x2048 pixels (issue #20): `python -m benchmarks.ood_compile_probe`.

The answer decided that `OODAccumulator` runs its curves eager even under `stages.evaluate.compile`.
"""

from __future__ import annotations

import time
import traceback

import torch

from synthrel.metrics import ood


def _ms_per_call(fn, *args, repeats: int = 5) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    torch.manual_seed(0)
    rows, n = 4, 1024 * 2048
    scores = torch.rand(rows, n, device="cuda")
    is_ood = torch.rand(rows, n, device="cuda") < 0.05
    counted = torch.rand(rows, n, device="cuda") < 0.9
    reference = ood._image_curves(scores, is_ood, counted)[0]
    flat_scan = ood._row_cumsum
    variants = {"flat_scan": flat_scan,  # synthrel's
                "row_scan": lambda x: x.cumsum(1, dtype=torch.int32),  # the per-row scan it replaced
                "flat_scan_disabled": torch.compiler.disable(flat_scan)}  # the scan left out of the graph
    try:
        for name, row_cumsum in variants.items():
            ood._row_cumsum = row_cumsum
            torch._dynamo.reset()
            curves = torch.compile(ood._image_curves, dynamic=False)
            try:
                start = time.perf_counter()
                got = curves(scores, is_ood, counted)[0]
                torch.cuda.synchronize()
                built = time.perf_counter() - start
                diff = (got - reference).abs().nan_to_num().max().item()
                print(f"{name}: OK compile {built:.1f}s, {_ms_per_call(curves, scores, is_ood, counted):.2f} "
                      f"ms/call, max diff {diff:.2e}", flush=True)
            except Exception as e:  # an inductor failure is a result here
                print(f"{name}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:300]}", flush=True)
                traceback.print_exc(limit=-4)
    finally:
        ood._row_cumsum = flat_scan
    print(f"eager: {_ms_per_call(ood._image_curves, scores, is_ood, counted):.2f} ms/call")


if __name__ == "__main__":
    main()
