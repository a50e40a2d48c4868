"""Per-stage resources of a multi-stage run (#33): wall time, and on CUDA the allocated memory before and after
the stage and its peak; the check that each stage gave its GPU memory back; the environment line of the log;
the stage table of `+experiment=gpu_check`.

torch is imported inside the functions: `python -m synthrel.run --help` must not pay for it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from synthrel.errors import SynthrelError

log = logging.getLogger(__name__)

MiB = 2**20
#: package data: the rates measured by the benchmarks that the stage table and preflight quote
#: (written by `python -m benchmarks.run budget --write-rates`; tests/benchmarks checks it matches docs/bench_results)
RATES_FILE = "measured_rates.json"


class MemoryNotReleasedError(SynthrelError):
    """A stage left GPU memory allocated after it returned (a model or tensor still referenced)."""


@dataclass
class StageStats:
    stage: str
    wall_s: float
    images: int | None = None  # images the stage produced or read, when its summary says
    cuda_before_bytes: int | None = None  # None: CUDA not in use
    cuda_after_bytes: int | None = None
    cuda_peak_bytes: int | None = None

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.wall_s if self.images and self.wall_s > 0 else None


def cuda_in_use() -> bool:
    """CUDA was initialised by this process (a stage put something on a GPU), without initialising it."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()


def release_memory() -> None:
    """Collect the stage's dropped objects, free cuBLAS's per-handle workspaces (32 MiB each for cuBLAS and
    cuBLASLt on Hopper, held as allocated memory until cleared; measured on an H100: 65 and 99 MiB left after
    train_zoo and generate without this), then return the cached blocks to the driver."""
    gc.collect()
    if cuda_in_use():
        import torch

        clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)  # absent from CPU builds
        if clear_workspaces is not None:
            clear_workspaces()
        torch.cuda.empty_cache()


@contextlib.contextmanager
def measure(stage: str):
    """Measure the `with` block as stage `stage`; yields the StageStats, filled when the block ends."""
    stats = StageStats(stage, 0.0)
    if cuda_in_use():
        import torch

        torch.cuda.reset_peak_memory_stats()
        stats.cuda_before_bytes = torch.cuda.memory_allocated()
    start = time.perf_counter()
    yield stats
    release_memory()
    stats.wall_s = time.perf_counter() - start
    if cuda_in_use():  # also when the stage was the first to touch CUDA (then 0 bytes before)
        import torch

        stats.cuda_before_bytes = stats.cuda_before_bytes or 0
        stats.cuda_after_bytes = torch.cuda.memory_allocated()
        stats.cuda_peak_bytes = torch.cuda.max_memory_allocated()


def count_images(summary: dict) -> int | None:
    """The images a stage summary reports (its first integer count key), None when it reports none."""
    for key in ("images", "captioned", "generated", "written", "items"):  # caption, generate, corrupt, inpaint
        value = summary.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def check_released(stats: list[StageStats], margin_mb: float) -> list[str]:
    """The stages whose allocated GPU memory after the stage exceeds that before it by more than `margin_mb`."""
    leaks = []
    for s in stats:
        if s.cuda_after_bytes is None:
            continue
        grown = (s.cuda_after_bytes - (s.cuda_before_bytes or 0)) / MiB
        if grown > margin_mb:
            leaks.append(f"{s.stage}: {grown:.0f} MiB still allocated after the stage (margin {margin_mb:g} MiB)")
    return leaks


def environment(cfg) -> str:
    """One log line: the card, torch and CUDA versions, and each stage's precision / compile settings in force."""
    import torch

    from synthrel.runtime import resolve_device

    device = resolve_device(str(cfg.get("device", "auto")))
    if device.type == "cuda":
        card = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"
    else:
        card = "CPU"
    settings = []
    for name, spec in (cfg.get("stages") or {}).items():
        kept = {k: spec.get(k) for k in ("precision", "dtype", "compile") if k in spec}
        if "finetune" in spec and spec.finetune is not None and "precision" in spec.finetune:
            kept["finetune.precision"] = spec.finetune.precision
        if kept:
            settings.append(f"{name}({', '.join(f'{k}={v}' for k, v in kept.items())})")
    return f"device={device} card={card} torch={torch.__version__} settings: {' '.join(settings) or '-'}"


# ------------------------------------------------------------------------------------------------ stage table
def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def measured_rates() -> dict:
    """The benchmark rates shipped with the package (synthrel/measured_rates.json): row name -> rate, card, source,
    1-GPU hours at the paper's work counts (benchmarks/budget.py's rows)."""
    return json.loads(resources.files("synthrel").joinpath(RATES_FILE).read_text())["rows"]


BACKBONE_LABELS = {"sd15": "SD1.5", "sdxl": "SDXL"}  # the budget's row names: "generate SD1.5", ...


def rates_of(stage: str, backbone: str | None = None) -> dict[str, dict]:
    """The measured budget rows of pipeline stage `stage` (inpaint: its three calls); for generate and
    train_controlnet the row of `backbone` (sd15 | sdxl) only, when given."""
    rows = {name: r for name, r in measured_rates().items() if r["stage"] == stage and r["per_s"]}
    if backbone is not None and stage in ("generate", "train_controlnet"):
        rows = {k: r for k, r in rows.items() if k.endswith(f" {BACKBONE_LABELS.get(backbone, backbone)}")}
    return rows


def compile_cost(backbone: str) -> dict | None:
    """The measured compile trade of ControlNet training for `backbone` (sd15 | sdxl): eager and compiled
    images/s, the one-time compile seconds, the resolution, card and source; None where not measured."""
    row = measured_rates().get(f"train_controlnet {BACKBONE_LABELS.get(backbone, backbone)}") or {}
    return row.get("compile")


def stage_table(stats: list[StageStats], device: str, backbone: str | None = None) -> tuple[str, dict]:
    """Markdown table of the stages (wall, images/s, peak memory, the benchmark's rate for the stage) and its JSON.

    Each stage's peak counts what earlier stages left allocated, so the run's peak is the largest stage peak and
    stays at one stage's own need only while `check_released` finds nothing.
    """
    lines = [f"stage table ({device}; benchmark rates: the paper-size work of `python -m benchmarks.run budget`)", "",
             "| stage | wall s | images | images/s | GPU peak GiB | GPU after - before MiB | benchmark (same work) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    rows = []
    for s in stats:
        bench = rates_of(s.stage, backbone)
        bench_text = "; ".join(f"{name}: {r['per_s']:.3g} {r['unit']}/s ({r['card']}, {r['source']})"
                               for name, r in bench.items()) or "-"
        grown = (None if s.cuda_after_bytes is None else (s.cuda_after_bytes - (s.cuda_before_bytes or 0)) / MiB)
        ips = s.images_per_s
        lines.append(f"| {s.stage} | {s.wall_s:.1f} | {s.images if s.images is not None else '-'} | "
                     f"{'-' if ips is None else f'{ips:.3g}'} | {gib(s.cuda_peak_bytes)} | "
                     f"{'-' if grown is None else f'{grown:.0f}'} | {bench_text} |")
        rows.append({**asdict(s), "images_per_s": ips, "benchmark": bench})
    total = sum(s.wall_s for s in stats)
    peaks = [s.cuda_peak_bytes for s in stats if s.cuda_peak_bytes is not None]
    run_peak_bytes = max(peaks) if peaks else None
    lines += ["", f"total wall {total:.1f} s; run peak GPU memory {gib(run_peak_bytes)} GiB"]
    return "\n".join(lines), {"device": device, "stages": rows, "total_wall_s": total,
                              "run_peak_bytes": run_peak_bytes}


def write_stage_table(stats: list[StageStats], out_dir: str | Path, device: str, backbone: str | None = None) -> Path:
    """Write stage_table.md / stage_table.json into the run folder and log the table."""
    text, data = stage_table(stats, device, backbone)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stage_table.md").write_text(text + "\n")
    (out / "stage_table.json").write_text(json.dumps(data, indent=2) + "\n")
    log.info("%s", text)
    return out / "stage_table.md"
