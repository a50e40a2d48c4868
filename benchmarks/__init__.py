"""Throughput benchmarks of synthrel's GPU paths against the plain library baselines (`python -m benchmarks.run`)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_result(result: dict, name: str, path: str | os.PathLike | None = None) -> Path | None:
    """Write a benchmark's JSON to `path`, else to $OUT/`name` when OUT is set (the device tool's output
    folder), atomically, so that a run killed mid-write keeps the previous partial result; returns where."""
    from synthrel.jobs import atomic_path

    if path is None and not os.environ.get("OUT"):
        return None
    target = Path(path) if path is not None else Path(os.environ["OUT"]) / name
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return target


def device_kernels(events) -> list:
    """The device-side rows of a torch.profiler event list or `key_averages()`: kernels, copies, memsets. Not the
    user-annotation spans torch mirrors on the GPU timeline (`record_function` ranges such as Lightning's
    `Optimizer.step#AdamW.step` or torch.compile's `Torch-Compiled Region`), which cover their kernels and the gaps
    between them: summed or unioned with the kernels, they count busy time twice or count idle time as busy."""
    import torch

    return [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA and not e.is_user_annotation]
