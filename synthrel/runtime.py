"""Process-wide settings applied once at start-up by every entry point (CLI, tests, benchmarks)."""

from __future__ import annotations

import contextlib
import logging
import os

import torch

from synthrel.errors import ConfigError

log = logging.getLogger(__name__)


def setup_runtime(cpu_threads: int | None = None) -> None:
    """Offline hub, no wandb prompt, denormals flushed, and optionally the number of CPU threads.

    Random-init ViTs on zero-padded inputs produce denormal floats that are ~15x slower on CPU
    (feasibility.md, SAM); flushing them must happen before torch starts its intra-op threads.
    """
    torch.set_flush_denormal(True)
    if cpu_threads:
        torch.set_num_threads(int(cpu_threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # mmengine checkpoints hold numpy meta


#: most loader workers of `num_workers: auto`: one decodes a 2-Mpx PNG sample in ~90 ms of CPU (the RbA fine-tune's
#: sample with its augmentation: `python -m benchmarks.run rbaloader`); a small model (PSPNet-R18) evaluates one in
#: ~20 ms on an H100 and the RbA Swin-B fine-tune takes 16 per step (docs/benchmarks.md)
AUTO_WORKERS = 8


def usable_cores() -> int:
    """The CPU cores this process may use (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def auto_workers() -> int:
    """Loader workers of `num_workers: auto`: the CPU cores this process may use but one (the main process issues
    the GPU work), at most AUTO_WORKERS; 0 on a single core."""
    return max(0, min(AUTO_WORKERS, usable_cores() - 1))


def loader_workers(value, key: str) -> int:
    """A stage's DataLoader `num_workers`: `auto` -> auto_workers(), an integer >= 0 as given; anything else is a
    ConfigError naming `key` (the stages' one resolver, so that `auto` means the same everywhere)."""
    if value == "auto":
        return auto_workers()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"`{key}` must be an integer >= 0 or auto, got {value!r}")
    return value


#: Set by the launchers that start one process per device (Lightning's DDP relaunch, torchrun, srun).
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_secondary_rank() -> bool:
    """This process is a rank other than 0 of a multi-process launch (e.g. one of the processes Lightning's DDP
    starts by running the same command again): it must leave what rank 0 writes to rank 0."""
    return any(os.environ.get(name, "0").strip() not in ("", "0") for name in RANK_VARIABLES)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"`device={device}` but no CUDA device is available; use device=cpu or device=auto")
    return dev


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool):
    """cuDNN's benchmark mode (kernels timed per new shape) inside the block only: the flag is process-global,
    so code outside the block (other models, baselines) keeps its setting."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled or previous
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
