"""Process-wide settings applied once at start-up by every entry point (CLI, tests, benchmarks)."""

from __future__ import annotations

import contextlib
import logging
import os

import torch

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
        from synthrel.errors import ConfigError

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
