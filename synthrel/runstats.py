"""Per-stage resources of a multi-stage run (#33): wall time, and on CUDA the allocated memory before and after
the stage and its peak; the check that each stage gave its GPU memory back; the environment line of the log;
each stage's steady-state rate (SteadyRate: its main loop after loading and warm-up); the stage table of
`+experiment=gpu_check`; the measured rates and the `compile: auto` rule of the stages that read them
(train_controlnet, generate, inpaint).

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

from synthrel.errors import ConfigError, SynthrelError

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
    steady: dict | None = None  # label -> SteadyRate.result() of the stage's summary (`steady_rates`)

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


def _synchronize() -> None:
    """Wait for the GPU's queued work, so a clock read after it counts that work (no-op without CUDA)."""
    if cuda_in_use():
        import torch

        torch.cuda.synchronize()


class SteadyRate:
    """Units per second of a stage's main loop in steady state: after its models are loaded and after its first
    `warmup` batches (allocation, cudnn autotuning, compilation, CUDA graph capture), so that a run of a few
    batches can be set beside a benchmark's rate; the stage's wall time counts the loading too.

    Two ways to time, both summed over the stage (a stage may run several loops: one per model and dataset):
      - `with rate.loop():` around a loop, `rate.tick(n)` after each batch: counts the time from the end of the
        loop's warm-up batches to the end of the loop, loading between batches included (one CUDA synchronise
        at the end of the warm-up and one at the loop's end, none per batch);
      - `with rate.timed(n):` around one part of a batch (e.g. inpainting's refinement call): counts only that
        part's time, synchronised before and after; its first `warmup` calls are the warm-up.
    """

    def __init__(self, unit: str = "image", warmup: int = 1, note: str = "", compiled: bool | None = None,
                 settings: dict | None = None):
        self.unit, self.warmup, self.note = unit, max(int(warmup), 1), note
        self.compiled = compiled  # the loop ran torch.compile'd (True) or eager (False); None: no such choice
        # the run's values of the settings a budget row's fast path names (versus): keys under the stage's config
        self.settings = settings
        self.units, self.seconds, self.warmup_units, self.warmup_seconds = 0, 0.0, 0, 0.0
        self._loop: dict | None = None
        self._calls = 0

    @contextlib.contextmanager
    def loop(self):
        state = self._loop = {"batches": 0, "mark": None, "units": 0, "start": time.perf_counter()}
        try:
            yield self
        finally:
            self._loop = None
        if state["mark"] is not None and state["units"]:
            _synchronize()
            self.seconds += time.perf_counter() - state["mark"]
            self.units += state["units"]

    def tick(self, units: int) -> None:
        """One batch of `units` of the current loop is done."""
        state = self._loop
        if state is None:
            raise RuntimeError("SteadyRate.tick outside `with rate.loop()`")
        state["batches"] += 1
        if state["batches"] <= self.warmup:
            self.warmup_units += units
            if state["batches"] == self.warmup:
                _synchronize()
                state["mark"] = time.perf_counter()
                self.warmup_seconds += state["mark"] - state["start"]
        else:
            state["units"] += units

    @contextlib.contextmanager
    def timed(self, units: int):
        _synchronize()
        start = time.perf_counter()
        yield self
        _synchronize()
        self._calls += 1
        if self._calls <= self.warmup:
            self.warmup_units += units
            self.warmup_seconds += time.perf_counter() - start
        else:
            self.units += units
            self.seconds += time.perf_counter() - start

    def add(self, other: SteadyRate) -> None:
        """Count `other`'s steady units and time here too (a per-model rate into the stage's)."""
        self.units += other.units
        self.seconds += other.seconds
        self.warmup_units += other.warmup_units
        self.warmup_seconds += other.warmup_seconds

    def result(self) -> dict:
        """For the stage summary's `steady_rates`: per_s None when nothing ran after the warm-up."""
        per_s = self.units / self.seconds if self.units and self.seconds > 0 else None
        return {"unit": self.unit, "units": self.units, "seconds": round(self.seconds, 4),
                "per_s": None if per_s is None else round(per_s, 4), "warmup_units": self.warmup_units,
                "warmup_seconds": round(self.warmup_seconds, 4), "note": self.note, "compiled": self.compiled,
                "settings": self.settings}


def steady_rate_callback(rate: SteadyRate, units_per_batch: int):
    """A pytorch_lightning Callback that times a Trainer's training loop into `rate`: `units_per_batch` per
    training batch (micro-batch); `rate.warmup` batches are the warm-up."""
    import pytorch_lightning as pl

    class SteadyRateCallback(pl.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            self.loop = rate.loop()
            self.loop.__enter__()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            rate.tick(units_per_batch)

        def on_train_end(self, trainer, pl_module) -> None:
            self.loop.__exit__(None, None, None)

    return SteadyRateCallback()


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


def compile_cost(backbone: str | None, stage: str = "train_controlnet") -> dict | None:
    """The measured compile trade of `stage` (train_controlnet | generate) for `backbone` (sd15 | sdxl), or of the
    budget row `stage` itself where there is no backbone (inpaint): eager and compiled images/s, the one-time
    compile seconds, the resolution, card and source; None where not measured."""
    name = stage if backbone is None else f"{stage} {BACKBONE_LABELS.get(backbone, backbone)}"
    return (measured_rates().get(name) or {}).get("compile")


def check_compile(setting, key: str) -> None:
    if setting is not True and setting is not False and setting != "auto":
        raise ConfigError(f"`{key}.compile` must be true, false or auto, got {setting!r}")


def compile_pays(images: float, eager_per_s: float, compiled_per_s: float, compile_s: float) -> bool:
    """Whether `images` made at the compiled rate, plus the one-time compile, take less time than eager."""
    return images * (1 / eager_per_s - 1 / compiled_per_s) > compile_s


def compile_choice(setting: bool | str, *, key: str, cuda: bool, images_per_device: int, resolution: int,
                   measured: dict | None) -> tuple[bool, str]:
    """`compile` of the stage at config key `key` (train_controlnet, generate, inpaint): true / false as set; `auto`
    compiles when the job is long enough to pay for it.

    auto: off on CPU (no measurement; inductor needs a compiler) and for a backbone with no measured compile cost;
    else on when the job's images per device (training: max_steps x batch_size x accumulate_grad_batches, all of
    them, a resumed run counts its whole length; generate, inpaint: the items this shard still has to make) times the
    measured saving per image (1/eager - 1/compiled, scaled by pixels from the measured resolution) exceed the
    measured one-time compile seconds. `measured`: compile_cost(backbone, stage). Returns (on, the reason, for
    the log and the stage's record).
    """
    check_compile(setting, key)
    if setting != "auto":
        return bool(setting), f"set to {str(setting).lower()}"
    if not cuda:
        return False, "auto: off, not on CUDA"
    if not measured:
        return False, "auto: off, no measured compile cost for this backbone (compile=true forces it)"
    images = images_per_device * (resolution / measured["resolution"]) ** 2
    saving = images * (1 / measured["eager_per_s"] - 1 / measured["compiled_per_s"])
    on = compile_pays(images, measured["eager_per_s"], measured["compiled_per_s"], measured["compile_s"])
    return on, (f"auto: {'on' if on else 'off'}, {images_per_device} images per device save {saving:.0f} s "
                f"{'>' if on else '<='} {measured['compile_s']:.0f} s of compile (measured at "
                f"{measured['resolution']} px: {measured['eager_per_s']:g} img/s eager, "
                f"{measured['compiled_per_s']:g} compiled, {measured['card']}, {measured['source']})")


def checkpointing_cost(backbone: str | None) -> dict | None:
    """The measured peak memory of ControlNet training with checkpointing in the ControlNet only (the
    train_controlnet row of `backbone`): peak GiB, batch, resolution, card and source; None where not measured."""
    return (measured_rates().get(f"train_controlnet {BACKBONE_LABELS.get(backbone, backbone)}") or {}).get(
        "checkpointing")


def check_checkpointing(setting, key: str) -> None:
    if setting not in (True, False, "controlnet", "auto") or setting in (0, 1) and not isinstance(setting, bool):
        raise ConfigError(f"`{key}.gradient_checkpointing` must be true, false, controlnet (the ControlNet only) or "
                          f"auto, got {setting!r}")


#: `gradient_checkpointing: auto` leaves the frozen UNet out only where the card holds the measured peak with this
#: much to spare (DDP's gradient buckets, the allocator's fragmentation)
CHECKPOINTING_MARGIN = 1.1


def checkpointing_choice(setting: bool | str, *, key: str, card_gib: float | None, batch: int, resolution: int,
                         measured: dict | None, compiled: bool = False) -> tuple[bool | str, str]:
    """`gradient_checkpointing` of train_controlnet: true (ControlNet and UNet), false, controlnet (the ControlNet
    only: the frozen UNet keeps its activations, which saves its decoder's recomputation), or `auto`.

    auto, on a card of `card_gib` (None: not on CUDA): false where the run is `compiled` and the card holds the
    measured compiled peak without checkpointing (`measured["compiled_off"]`: Inductor saves fewer activations than
    eager, where batch 8 of SDXL does not fit 80 GB); else `controlnet` where it holds the measured peak of that
    setting (eager, so true of a compiled run too); else true. Each peak is scaled up by batch x pixels where the
    run's are larger, times CHECKPOINTING_MARGIN. Returns (the setting, the reason, for the log and the record)."""
    check_checkpointing(setting, key)
    if setting != "auto":
        return setting, f"set to {str(setting).lower()}"
    if card_gib is None:
        return True, "auto: true, not on CUDA (no memory measured)"
    if not measured:
        return True, "auto: true, no measured peak of controlnet-only checkpointing for this backbone"
    reasons = []
    for choice, peak in ((False, measured.get("compiled_off") if compiled else None), ("controlnet", measured)):
        if not peak:
            continue
        scale = max(1.0, batch * resolution**2 / (peak["batch"] * peak["resolution"] ** 2))
        need = peak["peak_gib"] * scale * CHECKPOINTING_MARGIN
        fits = card_gib >= need
        reasons.append(f"{'compiled without' if choice is False else 'controlnet-only'} checkpointing: the card's "
                       f"{card_gib:.0f} GiB {'>=' if fits else '<'} {need:.0f} GiB ({peak['peak_gib']:g} GiB measured "
                       f"at batch {peak['batch']}, {peak['resolution']} px, {peak['card']}, {peak['source']}; "
                       f"x {CHECKPOINTING_MARGIN:g})")
        if fits:
            return choice, f"auto: {str(choice).lower()}, " + "; ".join(reasons)
    return True, "auto: true, " + "; ".join(reasons)


#: a steady rate slower than this fraction of its benchmark's is flagged in the stage table (#33: > 20 % slower)
SLOW_RATIO = 0.8


def benchmark_of(label: str, stage: str, backbone: str | None = None) -> tuple[str, dict] | None:
    """The measured budget row that steady rate `label` of `stage` compares with: the row of that name, or of
    that name and the run's backbone ("generate" -> "generate SD1.5")."""
    rows = rates_of(stage, backbone)
    for name in (label, f"{label} {BACKBONE_LABELS.get(backbone or '', backbone)}"):
        if name in rows:
            return name, rows[name]
    return None


def at_settings(row: dict, setting) -> dict | None:
    """Budget row `row`'s rate ({per_s, conditions}) for a run whose value of each setting `setting(key)` gives
    (None: not recorded, not held against the run): the row's own on its fast path (and for a row without one),
    its rate at the stage's defaults off that path, None off it where that rate is not measured."""
    fast = row.get("fast_path") or {}
    if all(setting(key) in (None, value) for key, value in fast.items()):
        return {"per_s": row["per_s"], "conditions": row.get("conditions") or ""}
    return row.get("default")


def versus(label: str, rate: dict, stage: str, backbone: str | None = None) -> dict | None:
    """Steady rate / benchmark rate in the same unit; `slow` when below SLOW_RATIO. None without a benchmark row,
    a rate, or a common unit. So that like meets like: a run off the row's fast path (its `settings` differ from
    the row's `fast_path`) is set beside the row's rate at the stage's defaults, and without one gets no verdict;
    a stage that ran eager (rate `compiled` False) beside the eager rate of the row's measured compile trade where
    it has one (generate, train_controlnet, inpaint)."""
    found = benchmark_of(label, stage, backbone)
    if found is None or not rate.get("per_s"):
        return None
    name, row = found
    if row["unit"] != rate["unit"]:
        return None
    like = at_settings(row, (rate.get("settings") or {}).get)
    if like is None:
        return None
    per_s, conditions = like["per_s"], like["conditions"]
    trade = row.get("compile")
    if rate.get("compiled") is False and trade:
        per_s = trade["eager_per_s"]
        conditions = f"eager, {trade['resolution']}px, {trade['card']}, {trade['source'].split(' + ')[0]}"
    ratio = rate["per_s"] / per_s
    return {"benchmark": name, "ratio": round(ratio, 3), "slow": ratio < SLOW_RATIO, "benchmark_per_s": per_s,
            "benchmark_conditions": conditions, "run_conditions": rate.get("note", "")}


def _steady_cells(s: StageStats, backbone: str | None, comparable: bool) -> tuple[str, str, dict]:
    rates, vs_text, vs = [], [], {}
    for label, rate in (s.steady or {}).items():
        if not rate.get("per_s"):
            rates.append(f"{label}: - (no batch after the warm-up)")
            continue
        rates.append(f"{label}: {rate['per_s']:.3g} {rate['unit']}/s ({rate['units']} in {rate['seconds']:.1f} s"
                     + (f"; {rate['note']}" if rate.get("note") else "") + ")")
        v = versus(label, rate, s.stage, backbone) if comparable else None
        if v is not None:
            vs[label] = v
            text = f"{label}: {v['ratio']:.2f}x" + (f" **SLOW (< {SLOW_RATIO:g})**" if v["slow"] else "")
            if v["benchmark_conditions"]:
                text += f" (benchmark: {v['benchmark_conditions']})"
            vs_text.append(text)
    return "; ".join(rates) or "-", "; ".join(vs_text) or "-", vs


def stage_table(stats: list[StageStats], device: str, backbone: str | None = None,
                comparable: bool = True) -> tuple[str, dict]:
    """Markdown table of the stages (wall, images/s, peak memory, the benchmark's rate for the stage, the stage's
    steady rate and its ratio to the benchmark's) and its JSON.

    images/s divides by the whole wall time (model loading included); the steady rate (SteadyRate) leaves loading
    and the first batch out and is the figure to set beside the benchmark's. Each stage's peak counts what earlier
    stages left allocated, so the run's peak is the largest stage peak and stays at one stage's own need only
    while `check_released` finds nothing. `comparable` false (tiny models): no ratios, the rates are not the
    benchmarks' work.
    """
    lines = [f"stage table ({device}; benchmark rates: the paper-size work of `python -m benchmarks.run budget`; "
             f"steady rate: the stage's main loop after loading and its first batch; vs benchmark: steady / "
             f"benchmark rate in the same unit, SLOW below {SLOW_RATIO:g})", "",
             "| stage | wall s | images | images/s | GPU peak GiB | GPU after - before MiB | benchmark (same work) "
             "| steady rate | vs benchmark |",
             "|---|---:|---:|---:|---:|---:|---|---|---|"]
    rows = []
    for s in stats:
        bench = rates_of(s.stage, backbone)
        bench_text = "; ".join(f"{name}: {r['per_s']:.3g} {r['unit']}/s ({r['card']}, {r['source']})"
                               for name, r in bench.items()) or "-"
        grown = (None if s.cuda_after_bytes is None else (s.cuda_after_bytes - (s.cuda_before_bytes or 0)) / MiB)
        ips = s.images_per_s
        steady_text, vs_text, vs = _steady_cells(s, backbone, comparable)
        if not comparable and s.steady:
            vs_text = "- (tiny models)"
        lines.append(f"| {s.stage} | {s.wall_s:.1f} | {s.images if s.images is not None else '-'} | "
                     f"{'-' if ips is None else f'{ips:.3g}'} | {gib(s.cuda_peak_bytes)} | "
                     f"{'-' if grown is None else f'{grown:.0f}'} | {bench_text} | {steady_text} | {vs_text} |")
        rows.append({**asdict(s), "images_per_s": ips, "benchmark": bench, "vs_benchmark": vs})
    total = sum(s.wall_s for s in stats)
    peaks = [s.cuda_peak_bytes for s in stats if s.cuda_peak_bytes is not None]
    run_peak_bytes = max(peaks) if peaks else None
    slow = [label for r in rows for label, v in r["vs_benchmark"].items() if v["slow"]]
    lines += ["", f"total wall {total:.1f} s; run peak GPU memory {gib(run_peak_bytes)} GiB"
              + (f"; slower than {SLOW_RATIO:g} x benchmark: {', '.join(slow)}" if slow else "")]
    return "\n".join(lines), {"device": device, "stages": rows, "total_wall_s": total,
                              "run_peak_bytes": run_peak_bytes, "slow": slow}


def write_stage_table(stats: list[StageStats], out_dir: str | Path, device: str, backbone: str | None = None,
                      comparable: bool = True) -> Path:
    """Write stage_table.md / stage_table.json into the run folder and log the table."""
    text, data = stage_table(stats, device, backbone, comparable)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stage_table.md").write_text(text + "\n")
    (out / "stage_table.json").write_text(json.dumps(data, indent=2) + "\n")
    log.info("%s", text)
    return out / "stage_table.md"
