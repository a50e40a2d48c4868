"""Peak memory of the pooled exact OOD metric against sklearn on the same scores (issue #34 item 8).

`--pixels` float32 scores (default 8 M, max-logit-like: normal, nearly all distinct, the most distinct values per
pixel), 5 % OOD and 10 % void, written once to .npy files. Each method then runs in a fresh process that loads
them, imports numpy, torch and sklearn alike, resets the kernel's peak-RSS mark (`/proc/self/clear_refs`) and
reports the peak resident memory above what it held before the call (VmHWM - VmRSS), so that the data, the
interpreter and the libraries count for no one:

- `sklearn`: RbA's evaluator on the ID and OOD pixels (tests/ood_reference.py `rba_reference`): the void mask,
  `roc_curve`, `auc`, `average_precision_score`;
- `synthrel`: `pooled_ood_metrics(scores, labels)` (labels 0 / 1 / 255, void left out inside);
- `synthrel_batched`: `PooledOODCounts` fed `--batches` equal batches, as the evaluate stage feeds it, then
  `metrics()`; `metrics_only` is the peak of that final `metrics()` call alone (it reads low where the allocator
  reuses blocks the merges freed).

    python -m benchmarks.run ood_memory                    # 8 M pixels on the CPU (~1 min)
    python -m benchmarks.run ood_memory --pixels 30e6      # the issue's size (needs ~8 GB free)

JSON goes to $OUT/ood_memory.json when OUT is set (or to --json). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import write_result

METHODS = ("sklearn", "synthrel", "synthrel_batched")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class _Peak:
    """Peak RSS above the current RSS while the block runs, in MiB."""

    def __enter__(self):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.before = _status_kib("VmRSS")
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = round(time.perf_counter() - self.start, 2)
        self.mib = round((_status_kib("VmHWM") - self.before) / 1024, 1)


def _child(method: str, folder: Path, batches: int) -> dict:
    """One method in this (fresh) process: its result, seconds and peak above the loaded data."""
    import torch
    from sklearn.metrics import auc, average_precision_score, roc_curve

    from synthrel.metrics.ood import PooledOODCounts, pooled_ood_metrics

    torch.set_num_threads(1)
    scores, labels = np.load(folder / "scores.npy"), np.load(folder / "labels.npy")
    out = {}
    with _Peak() as peak:
        if method == "sklearn":
            keep = labels != 255
            y, s = labels[keep], scores[keep]
            fpr, tpr, _ = roc_curve(y, s)
            metrics = {"auroc": auc(fpr, tpr), "ap": average_precision_score(y, s),
                       "fpr95": float(fpr[np.argmax(tpr > 0.95)])}
        elif method == "synthrel":
            metrics = pooled_ood_metrics(scores, labels)
        else:
            counts = PooledOODCounts()
            for s, y in zip(np.array_split(scores, batches), np.array_split(labels, batches), strict=True):
                counts.update(torch.from_numpy(s), torch.from_numpy(y))
            counts.n_distinct  # noqa: B018 (merges the pending entries: metrics_only below is the final call alone)
            with _Peak() as final:
                metrics = counts.metrics()
            out["metrics_only"] = {"peak_above_mib": final.mib, "seconds": final.seconds}
            out["distinct_values"] = counts.n_distinct
    return {"peak_above_mib": peak.mib, "seconds": peak.seconds, "metrics": {k: float(v) for k, v in metrics.items()},
            **out}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run ood_memory", description=__doc__.split("\n")[0])
    p.add_argument("--pixels", type=float, default=8e6)
    p.add_argument("--batches", type=int, default=8, help="synthrel_batched: updates before metrics()")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--json", default=None, help="write the JSON here (default $OUT/ood_memory.json)")
    p.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, Path(args.data), args.batches)))
        return {}
    n = int(args.pixels)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        labels = np.where(rng.random(n) < 0.05, 1, 0).astype(np.uint8)
        labels[rng.random(n) < 0.1] = 255
        scores = (rng.standard_normal(n, dtype=np.float32) * 5 + 2 * (labels == 1)).astype(np.float32)
        np.save(Path(tmp) / "labels.npy", labels)
        np.save(Path(tmp) / "scores.npy", scores)
        res = {"pixels": n, "distinct_scores": len(np.unique(scores)), "counted_pixels": int((labels != 255).sum()),
               "data_mib": round((scores.nbytes + labels.nbytes) / 2**20, 1), "methods": {}}
        del scores, labels
        for method in args.methods:
            done = subprocess.run([sys.executable, "-m", "benchmarks.ood_memory", "--child", method, "--data", tmp,
                                   "--batches", str(args.batches)], check=True, capture_output=True, text=True)
            res["methods"][method] = json.loads(done.stdout.strip().splitlines()[-1])
    ref = res["methods"].get("sklearn")
    for method, entry in res["methods"].items():
        line = f"{method:17s} peak above the data {entry['peak_above_mib']:8.1f} MiB  {entry['seconds']:6.2f} s"
        if ref and method != "sklearn":
            entry["peak_ratio_to_sklearn"] = round(entry["peak_above_mib"] / ref["peak_above_mib"], 3)
            entry["max_abs_diff_vs_sklearn"] = max(abs(entry["metrics"][k] - ref["metrics"][k]) for k in ref["metrics"])
            line += f"  ratio to sklearn {entry['peak_ratio_to_sklearn']:.3f}  |diff| {entry['max_abs_diff_vs_sklearn']:.1e}"
        if "metrics_only" in entry:
            line += f"  (final metrics() alone {entry['metrics_only']['peak_above_mib']:.1f} MiB)"
        print(line, flush=True)
    write_result(res, "ood_memory.json", args.json)
    return res


if __name__ == "__main__":
    main()
