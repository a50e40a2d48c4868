"""The paper's GPU budget with synthrel: GPU-hours per stage at real size, on 1 GPU and on one 8-GPU node (#20).

    python -m benchmarks.run budget                       # from docs/bench_results/*.json
    python -m benchmarks.run budget --results DIR --json budget.json

No GPU is used: every throughput is read from a measured JSON (gen_bench, eval_bench --zoo-run, multigpu and
benchmarks/stage_throughput.py's `throughput_<stage>_<card>.json`), and each row names that file and its card.
A stage whose JSON is absent is printed as "not measured" and left out of the totals (which then say so); no
throughput is estimated. The work counts (COUNTS) come from the spec (shared/spec/paper_spec.md), the
supplementary material and the stage configs; each says where it comes from.

Hours on 1 GPU = units / (units per second) / 3600, stage by stage. On 8 GPUs: the stages that shard (`shard=i/n`
splits their items, or the (model, dataset) pairs of evaluate) take 1/8 of it; the RbA fine-tunes are
independent runs, one per GPU (the wall time of ceil(runs / 8) runs); ControlNet training is one DDP run, whose
8-GPU speed-up was not measured: the table uses the per-GPU efficiency measured on 2 GPUs (multigpu JSON) and
says so. The 8-GPU total is the sum of the stages' wall times, one stage after the other on the node.

Where a measurement was taken at another size than the paper's, the row says how it is scaled: the zoo's
evaluation was measured per model on 512x512 images and is scaled by each model's processed pixels (windows in
slide mode) per image, as `eval_bench --zoo-run` does; a temperature-scaling fit by the number of pixels. With an
`eval_families_*.json` (benchmarks/eval_families.py), the models of the families it measured take their family's
compiled rates at the real sizes and its compile time once per (model, input size) instead (EvaluateCost).

The physical limit (#36): FLOPs per unit come from docs/bench_results/flops.json (`python -m benchmarks.run flops`,
counted with FlopCounterMode on the real architectures built on the meta device); the ideal time is those FLOPs at
PEAK_TFLOPS, and MFU = ideal / measured time. Three totals: the whole paper from scratch, the paper with the
released SD1.5 ControlNet (no SD1.5 training), and a user's forecast path (one new model evaluated on the five
synthetic sets and the OOD set), each on 1 GPU and on one 8-GPU node, against #36's targets.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from benchmarks import write_result
from synthrel.ood_detection.job import RBA_SCHEDULES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "bench_results"
ZOO = ROOT / "synthrel" / "conf" / "zoo" / "paper40.yaml"
FLOPS = RESULTS / "flops.json"
TARGET_HOURS_8 = 2.0
GPUS = 8
#: dense bf16 tensor-core peak of the H100 SXM5 (NVIDIA H100 datasheet: 989 TFLOP/s, 1979 with 2:4 sparsity);
#: the H200 SXM has the same compute (NVIDIA H200 datasheet), so one peak serves both cards of the table
PEAK_TFLOPS = 989.0
#: the totals (#36): which rows each counts, and its target (hours; on GPUS GPUs or on 1)
RELEASED = "train_controlnet SD1.5"  # the row a released SD1.5 ControlNet saves
FORECAST = "forecast: evaluate one model"
TOTALS = {
    "paper": ("the whole paper from scratch", TARGET_HOURS_8, GPUS),
    "paper_released_controlnet": ("the paper with the released SD1.5 ControlNet (no SD1.5 training)", 6.0, GPUS),
    "forecast": ("a user's forecast path: one new model on the 5 synthetic sets + the OOD set", 0.25, 1),
}

#: The paper's work, with the source of each number.
DOMAINS = ("fog", "night", "rain", "snow", "india")
COUNTS = {
    "cityscapes_train": (2975, "spec 2.1: Cityscapes train"),
    "cityscapes_val": (500, "spec 2.1: Cityscapes val (frankfurt 267, lindau 59, munster 174)"),
    "samples_per_domain": (512, "synthrel/conf/profile/paper.yaml num_samples (A.2; drawn from the 500 val label maps)"),
    "all_domains": (28 * 64, "supplementary B: 28 shifts x 64 images (synthrel/conf/domain/all_domains.yaml); SD1.5 only"),
    "all_domains_but_rain": (27 * 64, "supplementary B: 27 shifts x 64 images; SD1.5 only"),
    "ood_objects": (42 * 512, "spec S4: 42 objects x 512 attempts (synthrel/conf/ood_objects/paper42.yaml, "
                              "profile ood_samples_per_object); every attempt counted as accepted"),
    "acdc_per_condition": (400, "synthrel/conf/dataset/acdc_*.yaml split train (spec 2.1: 400 per condition)"),
    "idd_val": (981, "synthrel/conf/dataset/idd.yaml split val (IDD segmentation val: 981 images)"),
    "road_anomaly": (60, "spec 2.1: Road Anomaly, 60 images"),
    "smiyc_ra21": (10, "SMIYC RoadAnomaly21 validation images"),
    "smiyc_ro21": (30, "SMIYC RoadObstacle21 validation images"),
    "fs_lost_and_found": (100, "Fishyscapes Lost & Found validation images"),
    "zoo_models": (40, "spec 4 / synthrel/conf/zoo/paper40.yaml"),
    "sd15_train": (2100 * 8 * 32, "supplementary A.1: 2100 steps x batch 8 x 32 accumulation (images seen)"),
    "sdxl_train": (27500 * 8 * 4, "supplementary A.1: 27500 steps x batch 8 x 4 accumulation (images seen)"),
    "rba_runs": (6, "Table 2: Swin-B and Swin-L x (COCO, ours curated, ours all)"),
    "rba_steps": (RBA_SCHEDULES["supplementary"], "supplementary A.4 / synthrel/conf/stage/ood_detection.yaml "
                  "schedule: supplementary (schedule=rba_official, RbA's own config: 2000)"),
    "rba_models": (8, "Table 2: 2 base RbA models + 6 fine-tuned"),
    "calib_pixels": (20000, "spec 3.2: pixels per image of the calibration sample"),
}
#: evaluated sets: name -> (images, (height, width)); what the 40 models are run on
SIZE_CS, SIZE_ACDC = (1024, 2048), (1080, 1920)


def n(key: str) -> int:
    return COUNTS[key][0]


def evaluation_grid() -> list[tuple[str, int, tuple[int, int]]]:
    per_domain = n("samples_per_domain")
    return [
        ("cityscapes val", n("cityscapes_val"), SIZE_CS),
        ("ACDC fog/night/rain/snow (train)", 4 * n("acdc_per_condition"), SIZE_ACDC),
        ("IDD val (mixed 1080p/720p: counted at 1080x1920)", n("idd_val"), SIZE_ACDC),
        ("synthetic SD1.5, 5 domains", 5 * per_domain, (512, 512)),
        ("synthetic SDXL, 5 domains", 5 * per_domain, (1024, 1024)),
        ("synthetic SD1.5 all-domains + all-but-rain", n("all_domains") + n("all_domains_but_rain"), (512, 512)),
        ("OOD objects (inpainted)", n("ood_objects"), SIZE_CS),
        ("Road Anomaly + SMIYC RA21", n("road_anomaly") + n("smiyc_ra21"), (720, 1280)),
        ("SMIYC RO21", n("smiyc_ro21"), SIZE_ACDC),
        ("FS Lost & Found", n("fs_lost_and_found"), SIZE_CS),
    ]


# ------------------------------------------------------------------------------------------- measurements
@dataclass
class Measured:
    per_s: float  # units per second
    card: str
    source: str
    detail: str = ""  # the measured conditions (batch, resolution, precision...): the stage table quotes them
    #: a rate at a named fast path: its settings (keys under the row's stage config) and the rate at the stage's
    #: defaults (None: not measured), so that a run at its defaults is set beside a like rate (runstats.versus)
    fast_path: dict = field(default_factory=dict)
    default: Measured | None = None


def _load(results: Path, name: str) -> dict | None:
    path = results / name
    return json.loads(path.read_text()) if path.is_file() else None


def _prefer(paths: list[Path]) -> list[Path]:
    """H100 files first (the issues' card), then H200, then the rest; newest name last within each."""
    rank = {"h100": 0, "h200": 1}
    return sorted(paths, key=lambda p: (min((r for c, r in rank.items() if c in p.name), default=2), p.name))


def throughput_json(results: Path, stage: str, key: str = "per_s", compiled: bool = False) -> tuple[Path, dict] | None:
    """benchmarks/stage_throughput.py's JSON of `stage` (not a tiny or failed run), eager or `--train-compile`."""
    for path in _prefer(list(results.glob(f"throughput_{stage}_*.json"))):
        d = json.loads(path.read_text())
        if d.get("tiny") or "error" in d or d.get(key) in (None, 0):
            continue
        if bool((d.get("settings") or {}).get("compile")) != compiled:
            continue
        return path, d
    return None


def throughput(results: Path, stage: str, key: str = "per_s", compiled: bool = False) -> Measured | None:
    found = throughput_json(results, stage, key, compiled)
    if found is None:
        return None
    path, d = found
    settings = d.get("settings") or {}
    shown = {"batch": d.get("batch")} if key == "per_s" else {key: ""}
    shown.update({k: "x".join(map(str, v)) if isinstance(v, list) else v for k, v in settings.items()})
    detail = ", ".join(f"{k} {v}".strip() for k, v in shown.items() if v is not None and not isinstance(v, dict))
    return Measured(float(d[key]), d["device"], path.name, detail)


def compile_trade(results: Path, model: str) -> dict | None:
    """The measured compile trade of ControlNet training for `model`: eager and `--train-compile` rates of the
    same card and resolution and the compiled run's first optimizer step (the one-time compile). The train_controlnet
    stage's `compile: auto` decides with it (synthrel/measured_rates.json); None unless both are measured."""
    eager = throughput_json(results, f"controlnet_train_{model}")
    compiled = throughput_json(results, f"controlnet_train_{model}", compiled=True)
    if eager is None or compiled is None:
        return None
    (e_path, e), (c_path, c) = eager, compiled
    size = [(d.get("settings") or {}).get("resolution") for d in (e, c)]
    if e["device"] != c["device"] or size[0] != size[1] or "first_step_s" not in c["settings"]:
        return None
    compile_s, compile_path = max([(c["settings"]["first_step_s"], c_path), *lever_first_steps(results, model, c)])
    compile_from = "" if compile_path == c_path else f"; the compile: {compile_path.name}"
    return {"eager_per_s": e["per_s"], "compiled_per_s": c["per_s"], "compile_s": round(compile_s, 1),
            "resolution": e["settings"]["resolution"], "card": e["device"],
            "source": f"{e_path.name} + {c_path.name}{compile_from}"}


#: gen_bench JSONs of synthrel's ControlNetSampler at batch 8 (the generate stage's default): compiled (the rows'
#: rate) and eager (`--no-compile`: the other side of the stage's `compile: auto`)
GEN_COMPILED = {"sd15": "gen_bench_sd15_final_h100.json", "sdxl": "gen_bench_sdxl_compile_vae_h100.json"}
GEN_EAGER = {"sd15": "gen_bench_sd15_fast_eager_h100.json", "sdxl": "gen_bench_sdxl_fast_eager_h100.json"}


def generation_trade(results: Path, model: str) -> dict | None:
    """The generate stage's measured compile trade for `model`, in compile_trade()'s form: the sampler's eager and
    compiled rates at batch 8 (same card, size and steps) and the one-time compile of a fresh process: the
    compiled run's warm-up (first call - steady batch) summed over its calls up to the first at batch 8 (SD1.5's
    run began at batch 1: 124 s, then 33 s more at batch 8; SDXL's began at batch 8). None unless both measured."""
    eager, compiled = _load(results, GEN_EAGER[model]), _load(results, GEN_COMPILED[model])
    if eager is None or compiled is None or eager["device"] != compiled["device"]:
        return None
    e, c = eager["models"][0], compiled["models"][0]
    if (e["size"], e["steps"]) != (c["size"], c["steps"]) or e["sampler"]["compile"] or not c["sampler"]["compile"]:
        return None
    e8 = next((r["synthrel"] for r in e["rows"] if r["batch"] == 8), None)
    upto = next((c["rows"][:i + 1] for i, r in enumerate(c["rows"]) if r["batch"] == 8), None)
    if e8 is None or upto is None:
        return None
    return {"eager_per_s": e8["img_per_s"], "compiled_per_s": upto[-1]["synthrel"]["img_per_s"],
            "compile_s": round(sum(r["synthrel"]["warmup_extra_s"] for r in upto), 2), "resolution": e["size"],
            "card": eager["device"], "source": f"{GEN_EAGER[model]} + {GEN_COMPILED[model]}"}


def generation(results: Path, model: str) -> Measured | None:
    name = GEN_COMPILED[model]
    d = _load(results, name)
    if d is None:
        return None
    entry = d["models"][0]
    row = next(r for r in entry["rows"] if r["batch"] == 8)
    shape = ", ".join(f"{entry[k]}{unit}" for k, unit in (("size", "px"), ("steps", " steps")) if k in entry)
    return Measured(row["synthrel"]["img_per_s"], d["device"], name,
                    f"ControlNetSampler, batch 8, {shape + ', ' if shape else ''}fp16, compiled, CUDA graphs")


#: the evaluate stage's settings at which the budget counts it (its defaults are fp32 eager: mmseg's numerics)
EVALUATE_FAST_PATH = {"precision": "bf16", "compile": True}
INPAINT = "gen_bench_inpaint_h200.json"
#: the inpaint stage's batch the budget counts: the fast path `stages.inpaint.batch_size=8` (the stage's default,
#: 1, makes each item's pixels independent of the batch it shares; 8 changes them by float rounding)
INPAINT_BATCH = 8


def _inpaint_run(d: dict, call: str, batch: int) -> dict | None:
    entry = d["models"][0]
    return next((r for r in entry["rows"] if r["batch"] == batch and r["call"] == call), None)


def inpainting(results: Path, call: str) -> Measured | None:
    """The `call`'s compiled rate at INPAINT_BATCH, with the batch-1 rate as its default (the batch-1 rate alone
    where that batch is not measured)."""
    d = _load(results, INPAINT)
    if d is None:
        return None
    entry = d["models"][0]
    strength, _, steps = entry["calls"][call]
    shape = f"{entry['size']}px patch, {steps} x {strength:g} steps, fp16, compile {entry['compile']}"

    def measured(run: dict, batch: str) -> Measured:
        return Measured(run["synthrel"]["img_per_s"], d["device"], INPAINT, f"accelerated pipeline, {batch}, {shape}")

    default = measured(_inpaint_run(d, call, 1), "batch 1 (the stage's default)")
    fast = _inpaint_run(d, call, INPAINT_BATCH)
    if fast is None:
        return default
    return replace(measured(fast, f"batch {INPAINT_BATCH}, the fast path `stages.inpaint.batch_size={INPAINT_BATCH}` "
                                  "(the stage's default is 1: each item's pixels independent of its batch)"),
                   fast_path={"batch_size": INPAINT_BATCH}, default=default)


def inpainting_trade(results: Path, call: str) -> dict | None:
    """The inpaint stage's compile trade for `call` (inpaint | refine), in compile_trade()'s form, at batch 1:
    the eager diffusers pipeline and the compiled accelerated one of the same process, and the compiled call's
    warm-up (the refinement call reuses the UNet the inpainting call compiled: its warm-up is ~0). The stage's
    `compile: auto` decides with the inpaint call's."""
    d = _load(results, INPAINT)
    if d is None:
        return None
    entry = d["models"][0]
    row = next(r for r in entry["rows"] if r["batch"] == 1 and r["call"] == call)
    if not (row.get("eager") or {}).get("img_per_s") or "warmup_extra_s" not in row["synthrel"]:
        return None  # a run without its eager side (--no-eager)
    return {"eager_per_s": row["eager"]["img_per_s"], "compiled_per_s": row["synthrel"]["img_per_s"],
            "compile_s": row["synthrel"]["warmup_extra_s"], "resolution": entry["size"], "card": d["device"],
            "source": f"{INPAINT} (eager: the diffusers pipeline)"}


def inpainting_row(results: Path, call: str, work: str, items: int) -> Row:
    """An inpaint call at the rate the stage runs it: compiled (reduce-overhead, as measured) where its
    `compile: auto` turns compile on for the items of one process, with the inpainting call paying the compile."""
    from synthrel.runstats import compile_choice

    row = Row("inpaint" if call == "inpaint" else f"inpaint: {call}", work, items, "image",
              inpainting(results, call), "shard")
    row.compile_trade = inpainting_trade(results, call)
    decider = inpainting_trade(results, "inpaint")
    if decider is not None and row.measured is not None:
        on, why = compile_choice("auto", key="stages.inpaint", cuda=True, images_per_device=math.ceil(items / GPUS),
                                 resolution=decider["resolution"], measured=decider)
        if not on:  # not for the paper's 2,688 items per shard: the eager rate, as the stage would run
            eager = (_inpaint_run(_load(results, INPAINT), call, INPAINT_BATCH) or {}).get("eager") or {}
            row.measured = Measured(eager.get("img_per_s") or row.compile_trade["eager_per_s"], decider["card"],
                                    INPAINT, "eager")
        elif call == "inpaint":
            row.fixed_s = decider["compile_s"]
        row.note = f"compile {why} (one shard of {GPUS}; on 1 GPU all {items} items)"
    if row.measured is not None and row.measured.fast_path:
        row.note += f"; {row.measured.detail}"
    return row


def grounded_sam(results: Path) -> Measured | None:
    """Grounded-SAM at the inpaint stage's fast path: bf16 (`detector_precision`) at INPAINT_BATCH, from the
    benchmark's `runs` where it has that run; else its fp32 batch-1 rate (the stage's defaults)."""
    found, default = throughput_json(results, "grounded_sam"), throughput(results, "grounded_sam")
    if found is None:
        return None
    path, d = found
    fast = next((r for r in d.get("runs") or [] if r["precision"] == "bf16" and r["batch"] == INPAINT_BATCH), None)
    if fast is None:
        return default
    return Measured(fast["per_s"], d["device"], path.name,
                    f"batch {INPAINT_BATCH}, bf16, the fast path `stages.inpaint.batch_size={INPAINT_BATCH} "
                    f"stages.inpaint.detector_precision=bf16` (the stage's defaults: batch 1, fp32)",
                    fast_path={"batch_size": INPAINT_BATCH, "detector_precision": "bf16"}, default=default)


def controlnet_training(results: Path, model: str) -> Measured | None:
    found = throughput(results, f"controlnet_train_{model}")
    if found is not None or model != "sd15":
        return found
    d = _load(results, "multigpu_h200x2_run1.json")
    if d is None:
        return None
    one = d["train"]["one_device"]
    return Measured(one["images_per_s"], d["devices"][0], "multigpu_h200x2_run1.json",
                    f"Lightning, {d['args']['resolution']}px, batch {one['batch']} x accumulate {one['accumulate']}, "
                    f"{one['precision']}, gradient checkpointing {d['args']['gradient_checkpointing']}")


LEVER_CONTROLNET_ONLY = "no_unet_checkpointing"  # benchmarks/train_levers.py's name of `controlnet` checkpointing
LEVER_COMPILED_OFF = "compile+no_checkpointing"  # the stage's `compile: true` with `gradient_checkpointing: false`

#: the stage's `gradient_checkpointing` setting -> benchmarks/train_levers.py's compiled variant of it
COMPILED_LEVER = {True: "compile", "controlnet": f"compile+{LEVER_CONTROLNET_ONLY}", False: LEVER_COMPILED_OFF}


def lever_first_steps(results: Path, model: str, compiled: dict) -> list[tuple[float, Path]]:
    """First optimizer steps (s, file) of the training-lever sweeps that compiled the stage's run `compiled` (its
    throughput JSON) again: the same card, resolution, batch and checkpointing. The stage's own first step is the
    compile only where Inductor's cache was cold; after a sweep had compiled the same graphs it takes seconds, so
    the longest first step measured for the setting stands for the one-time compile."""
    settings = compiled["settings"]
    variant = COMPILED_LEVER.get(settings.get("gradient_checkpointing"))
    found = []
    for path, d in lever_sweeps(results, model):
        ran = d["variants"].get(variant) or {}
        same = (d["device"], d["settings"]["resolution"], d["settings"]["batch"]) == (
            compiled["device"], settings["resolution"], compiled.get("batch"))
        if same and ran.get("first_step_s"):
            found.append((ran["first_step_s"], path))
    return found


def lever_sweeps(results: Path, model: str) -> list[tuple[Path, dict]]:
    """The training-lever sweeps of `model` at real size (train_levers_<model>_*.json), H100 files first."""
    loaded = ((path, json.loads(path.read_text())) for path in _prefer(list(results.glob(f"train_levers_{model}_*.json"))))
    return [(path, d) for path, d in loaded if not d.get("tiny")]


def checkpointing_trade(results: Path, model: str) -> dict | None:
    """What the train_controlnet stage's `gradient_checkpointing: auto` decides with, from the training-lever sweeps
    (train_levers_<model>_*.json): the largest eager peak of checkpointing in the ControlNet only (its batch,
    resolution, card, source), the speed-up of that setting compiled over `compile` alone, where one sweep ran
    both (one process), and `compiled_off`: the largest compiled peak without checkpointing, where it ran. None
    unless the controlnet-only peak is measured."""
    peak, speedup, compiled_off = None, {}, None

    def larger(kept: dict | None, ran: dict | None, d: dict, path: Path) -> dict | None:
        """`ran`'s peak (with its batch, resolution, card, source) where it exceeds `kept`'s, else `kept`."""
        if not (ran or {}).get("peak_gib") or kept is not None and ran["peak_gib"] <= kept["peak_gib"]:
            return kept
        return {"peak_gib": ran["peak_gib"], "batch": d["settings"]["batch"],
                "resolution": d["settings"]["resolution"], "card": d["device"], "source": path.name}

    for path, d in lever_sweeps(results, model):
        variants = d["variants"]
        peak = larger(peak, variants.get(LEVER_CONTROLNET_ONLY), d, path)
        compiled_off = larger(compiled_off, variants.get(LEVER_COMPILED_OFF), d, path)
        plain, lever = variants.get("compile") or {}, variants.get(f"compile+{LEVER_CONTROLNET_ONLY}") or {}
        if not speedup and "images_per_s" in plain and "images_per_s" in lever:
            speedup = {"compiled_speedup": round(lever["images_per_s"] / plain["images_per_s"], 4),
                       "speedup_card": d["device"], "speedup_source": path.name}
    return None if peak is None else {**peak, **speedup, **({"compiled_off": compiled_off} if compiled_off else {})}


def training_row(results: Path, model: str, work: str, images: int) -> Row:
    """ControlNet training at the rate the stage runs the paper's length at: compiled (plus the one-time compile)
    where its `compile: auto` turns compile on for it, else eager; times the measured speed-up of checkpointing the
    ControlNet only where the backbone's `gradient_checkpointing: auto` picks it on the card of both measurements
    (the stage's compiled rate was measured with checkpointing in both networks)."""
    from synthrel.runstats import compile_choice

    label = {"sd15": "SD1.5", "sdxl": "SDXL"}[model]
    row = Row(f"train_controlnet {label}", work, images, "image", controlnet_training(results, model), "ddp")
    trade = row.compile_trade = compile_trade(results, model)
    row.checkpointing = checkpointing_trade(results, model)
    if trade is not None:
        on, why = compile_choice("auto", key="stages.train_controlnet", cuda=True, images_per_device=images,
                                 resolution=trade["resolution"], measured=trade)
        row.note = f"compile {why}"
        if on:
            row.measured = Measured(trade["compiled_per_s"], trade["card"], trade["source"], "compiled")
            row.fixed_s = trade["compile_s"]
            lever = row.checkpointing or {}
            stage_run = throughput_json(results, f"controlnet_train_{model}", compiled=True)[1]["settings"]
            if stage_run.get("gradient_checkpointing") in ("controlnet", False):
                row.measured = Measured(trade["compiled_per_s"], trade["card"], trade["source"],
                                        "compiled, gradient checkpointing " + (
                                            "in the ControlNet only" if stage_run["gradient_checkpointing"] else "off"))
            elif backbone_default(model, "gradient_checkpointing") == "auto" and \
                    stage_run.get("gradient_checkpointing") is True and \
                    lever.get("speedup_card") == lever.get("card") == trade["card"]:
                row.measured = Measured(trade["compiled_per_s"] * lever["compiled_speedup"], trade["card"],
                                        f"{trade['source']} x {lever['speedup_source']}",
                                        "compiled, gradient checkpointing in the ControlNet only")
                row.note += (f"; gradient_checkpointing auto: controlnet on this card (eager peak "
                             f"{lever['peak_gib']:g} GiB), x {lever['compiled_speedup']:.3f} measured over compile "
                             f"alone in one process ({lever['speedup_source']}): an estimate until "
                             f"`throughput --stages controlnet_train_{model} --train-compile` measures the stage")
    return row


def backbone_default(model: str, key: str):
    """A `train:` default of the packaged backbone config (synthrel/conf/backbone/<model>.yaml)."""
    from omegaconf import OmegaConf

    return OmegaConf.load(ROOT / "synthrel" / "conf" / "backbone" / f"{model}.yaml").train.get(key)


def generation_row(results: Path, model: str, work: str, images: int) -> Row:
    """Generation at the rate the stage runs it: its `compile: auto` decides for the images of one process (the
    row's all on 1 GPU, one shard's on GPUS GPUs: spread_8), compiled plus the one-time compile where it pays,
    else eager; the compiled rate as measured where no eager rate was (no trade)."""
    from synthrel.runstats import compile_choice

    label = {"sd15": "SD1.5", "sdxl": "SDXL"}[model]
    row = Row(f"generate {label}", work, images, "image", generation(results, model), "shard")
    trade = row.compile_trade = generation_trade(results, model)
    if trade is not None and row.measured is not None:
        on, why = compile_choice("auto", key="stages.generate", cuda=True, images_per_device=images,
                                 resolution=trade["resolution"], measured=trade)
        if on:
            row.fixed_s = trade["compile_s"]
        else:
            row.measured = Measured(trade["eager_per_s"], trade["card"], trade["source"].split(" + ")[0], "eager")
        row.note = f"1 GPU: compile {why}; {GPUS} GPUs: compile {_generation_shard(row)[1].split(' (measured')[0]}"
    return row


def _generation_shard(row: Row) -> tuple[float, str]:
    """Wall hours of a generate row on GPUS GPUs, each shard's `compile: auto` deciding for its own images, and
    that decision's reason."""
    from synthrel.runstats import compile_choice

    trade, images = row.compile_trade, row.units / GPUS
    on, why = compile_choice("auto", key="stages.generate", cuda=True, images_per_device=math.ceil(images),
                             resolution=trade["resolution"], measured=trade)
    return (images / trade["compiled_per_s"] + trade["compile_s"] if on else images / trade["eager_per_s"]) / 3600, why


def ddp_scaling(results: Path) -> Measured | None:
    """The measured 2-GPU DDP speed-up of ControlNet training (per_s holds the speed-up)."""
    d = _load(results, "multigpu_h200x2_run1.json")
    if d is None:
        return None
    return Measured(d["train"]["scaling"], " + ".join(d["devices"]), "multigpu_h200x2_run1.json")


#: the zoo run's JSONs and their cards (these JSONs predate the device field; cards from docs/benchmarks.md)
ZOO_RUNS = {"eval_zoo_run_512_h200.json": "NVIDIA H200", "eval_zoo_run_512_convnext_h100.json": "NVIDIA H100 80GB HBM3"}


def zoo_seconds_per_image(results: Path) -> tuple[dict[str, float], dict[str, str], dict]:
    """Seconds per 512x512 image per paper40 model (bf16 eager, batch 8), and the card of each."""
    seconds, cards, meta = {}, {}, {}
    for name, card in ZOO_RUNS.items():
        d = _load(results, name)
        if d is None:
            continue
        run = d["zoo_run"]
        meta[name] = {"precision": run.get("precision"), "images": run["zoo_images"], "batch": run.get("batch_size")}
        for key, m in run["models"].items():
            seconds[key] = m["seconds"] / run["zoo_images"]
            cards[key] = card
    return seconds, cards, meta


#: the evaluated sets whose images carry OOD masks (the exact OOD metrics run too): they take a size's ":ood" rate
OOD_SETS = ("OOD objects (inpainted)", "Road Anomaly + SMIYC RA21", "SMIYC RO21", "FS Lost & Found")


def family_runs(results: Path) -> tuple[dict[str, dict], str | None, str | None]:
    """benchmarks/eval_families.py's measurements (`eval_families_*.json`, compiled, not tiny): family ->
    {"model": key, "sizes": {"HxW[:ood]": run}}, with the card and the files. The files of the preferred card
    (H100 first) are merged, so that families measured in separate runs all count; where two files measured the
    same family, the later name wins."""
    families, card, files = {}, None, []
    for path in _prefer(list(results.glob("eval_families_*.json"))):
        d = json.loads(path.read_text())
        if d.get("tiny") or not (d.get("settings") or {}).get("compile") or card not in (None, d["device"]):
            continue
        found = {m["family"]: {"model": key, "sizes": m["sizes"]} for key, m in d["models"].items() if m["sizes"]}
        if found:
            families.update(found)
            card = d["device"]
            files.append(path.name)
    return families, card, " + ".join(files) or None


def loader_floor(results: Path) -> Measured | None:
    """The evaluate loader's steady capacity through 1024x2048 PNG files: workers / (a worker's decode and
    collate time per image), measured by `benchmarks.run evalfam`'s PSPNet profile (`loader_capacity_img_s`, the
    most workers it ran, the slower of its Cityscapes and OOD-object sets). No model evaluates a long set faster
    on that host. Short sets run slower (the workers' start-up: see docs/benchmarks.md#eval-families)."""
    for path in _prefer(list(results.glob("eval_families_*.json"))):
        d = json.loads(path.read_text())
        profile = next(iter((d.get("profile") or {}).values()), None)
        if d.get("tiny") or not profile or tuple(profile["size"]) != (1024, 2048):
            continue
        runs = [max((r for r in st["runs"] if r.get("loader_capacity_img_s")), key=lambda r: r["workers"])
                for name, st in profile["sets"].items() if name != "in_memory"]
        slow = min(runs, key=lambda r: r["loader_capacity_img_s"])
        ms = slow["worker_read_ms_per_img"] + slow["worker_collate_ms_per_img"]
        return Measured(slow["loader_capacity_img_s"], d["device"], path.name,
                        f"{slow['workers']} loader workers, {ms:.0f} ms per image each")
    return None


class EvaluateCost:
    """Seconds per image of a zoo model at an input size, and its compile seconds per input size.

    A model of a family that eval_families measured (compiled, at the real sizes) takes its family's measured
    rate: the measured model itself directly, the other members as their eager 512x512 time scaled to the size
    (`zoo_seconds_per_image` x processed pixels, as before) times the family's compiled / eager ratio at that size.
    A size the family was not measured at is scaled from its first measured size by processed pixels (windows);
    a set without OOD masks takes the size's ":ood" rate when the size alone was not measured. Compile: once per
    (model, input size), the family's measured first-batch overhead at that size (or the largest it measured).
    Models of unmeasured families: the eager 512x512 time scaled, no compile (the old rule). Every rate is then
    capped by `floor` (loader_floor: the loader's capacity through PNG files, scaled by pixels): the family rates are
    the GPU's, measured with images in memory."""

    def __init__(self, entries: dict, seconds: dict[str, float], families: dict[str, dict],
                 floor: Measured | None = None):
        self.entries, self.seconds, self.families, self.floor = entries, seconds, families, floor

    def host_seconds(self, size: tuple[int, int]) -> float:
        """The loader's seconds per image of `size` (0 without a floor measurement)."""
        return 0.0 if self.floor is None else size[0] * size[1] / (1024 * 2048) / self.floor.per_s

    def _eager(self, key: str, size: tuple[int, int]) -> float | None:
        from benchmarks.eval_bench import _processed_cost

        if key not in self.seconds or key not in self.entries:
            return None
        entry = self.entries[key]
        return self.seconds[key] * _processed_cost(entry, *size) / _processed_cost(entry, 512, 512)

    def _run(self, family: str, size: tuple[int, int], ood: bool) -> dict | None:
        sizes = self.families[family]["sizes"]
        name = f"{size[0]}x{size[1]}"
        return sizes.get(name + (":ood" if ood else "")) or sizes.get(name + ("" if ood else ":ood"))

    def compiled(self, key: str) -> bool:
        return self.entries[key].family in self.families

    def image_seconds(self, key: str, size: tuple[int, int], ood: bool) -> float | None:
        gpu = self.gpu_seconds(key, size, ood)
        return None if gpu is None else max(gpu, self.host_seconds(size))

    def gpu_seconds(self, key: str, size: tuple[int, int], ood: bool) -> float | None:
        from benchmarks.eval_bench import _processed_cost

        entry = self.entries[key]
        if entry.family not in self.families:
            return self._eager(key, size)
        family = self.families[entry.family]
        rep = family["model"]
        rep_entry = self.entries.get(rep, entry)
        run = self._run(entry.family, size, ood)
        if run is not None:
            rep_s = 1 / run["steady_img_s"]
        else:  # scaled from the first measured size
            first = next(iter(family["sizes"].values()))
            rep_s = (_processed_cost(rep_entry, *size) / _processed_cost(rep_entry, first["height"], first["width"])
                     / first["steady_img_s"])
        if key == rep:
            return rep_s
        eager, rep_eager = self._eager(key, size), self._eager(rep, size)
        if eager is None or rep_eager is None:  # no eager ratio: the member scaled by its processed pixels
            return rep_s * _processed_cost(entry, *size) / _processed_cost(rep_entry, *size)
        return eager * rep_s / rep_eager

    def compile_seconds(self, key: str, size: tuple[int, int]) -> float:
        family = self.entries[key].family
        if family not in self.families:
            return 0.0
        runs = [r for r in (self._run(family, size, True), self._run(family, size, False)) if r is not None]
        runs = runs or list(self.families[family]["sizes"].values())
        return max(r["compile_s"] for r in runs)


# ------------------------------------------------------------------------------------------------ the table
@dataclass
class Row:
    stage: str
    work: str
    units: float
    unit: str
    measured: Measured | None
    spread: str  # shard | ddp | runs
    seconds_1: float | None = None  # when not units / per_s (evaluate, calibrate: summed per model / set)
    note: str = ""
    runs: int = 1
    wall_8_h: float | None = field(default=None)
    tflop: float | None = None  # the row's whole work, counted (flops.json); None: not counted
    fixed_s: float = 0.0  # one-time seconds per process (compile), in the time but not divided on 8 GPUs
    compile_trade: dict | None = None  # training / generate / inpaint rows: *_trade() (measured_rates.json carries it)
    checkpointing: dict | None = None  # training rows: checkpointing_trade() (measured_rates.json carries it)
    pair_hours: list[float] = field(default_factory=list)  # spread "pairs": 1-GPU hours of each (model, set) pair
    flops_key: tuple[str, ...] = ()  # its TFLOP per unit in flops.json where not PER_UNIT's (the RbA rows: by head)

    @property
    def ideal_hours_1(self) -> float | None:
        """The work's FLOPs at PEAK_TFLOPS on one GPU."""
        return None if self.tflop is None else self.tflop / PEAK_TFLOPS / 3600

    @property
    def mfu(self) -> float | None:
        """Model-FLOP utilisation: ideal time / measured time."""
        ideal, hours = self.ideal_hours_1, self.hours_1
        return None if ideal is None or not hours else ideal / hours

    @property
    def hours_1(self) -> float | None:
        if self.seconds_1 is not None:
            return self.seconds_1 / 3600
        return None if self.measured is None else (self.units / self.measured.per_s + self.fixed_s) / 3600


def spread_8(row: Row, scaling: Measured | None) -> float | None:
    """Wall hours of `row` on one node of GPUS GPUs."""
    if row.hours_1 is None:
        return None
    if row.stage.startswith("generate ") and row.compile_trade is not None:
        return _generation_shard(row)[0]
    wall = _spread_work(row, row.hours_1 - row.fixed_s / 3600, scaling)
    return None if wall is None else wall + row.fixed_s / 3600  # every process compiles once, at the same time


def _spread_work(row: Row, hours: float, scaling: Measured | None) -> float | None:
    if row.spread == "shard":
        return hours / GPUS
    if row.spread == "runs":  # independent runs, one per GPU
        return hours / row.runs * math.ceil(row.runs / GPUS)
    if row.spread == "pairs":  # evaluate's shard=i/n deals out whole (model, dataset) pairs: the longest one
        return max(row.pair_hours)
    if row.spread == "ddp":
        if scaling is None:
            return None
        efficiency = scaling.per_s / 2  # per GPU, measured on 2 GPUs; assumed to hold on GPUS
        return hours / (GPUS * efficiency)
    raise ValueError(row.spread)


def build_rows(results: Path, zoo_file: Path = ZOO) -> tuple[list[Row], Measured | None, dict]:

    per_domain = n("samples_per_domain")
    synth_sd15 = 5 * per_domain + n("all_domains") + n("all_domains_but_rain")
    synth_sdxl = 5 * per_domain
    ood = n("ood_objects")
    rows = [
        Row("caption", "BLIP on Cityscapes train + val", n("cityscapes_train") + n("cityscapes_val"), "image",
            throughput(results, "caption"), "shard"),
        training_row(results, "sd15", "2100 steps x 8 x 32 at 512px", n("sd15_train")),
        training_row(results, "sdxl", "27500 steps x 8 x 4 at 1024px", n("sdxl_train")),
        generation_row(results, "sd15", f"5 domains x {per_domain} + all-domains sets", synth_sd15),
        generation_row(results, "sdxl", f"5 domains x {per_domain}", synth_sdxl),
        inpainting_row(results, "inpaint", "42 objects x 512, inpainting call", ood),
        inpainting_row(results, "refine", "42 objects x 512, refinement call", ood),
        Row("inpaint: Grounded-SAM", "42 objects x 512 masks", ood, "image", grounded_sam(results), "shard"),
    ]
    # evaluate: every model on every set: compiled rates at the real sizes per family where measured, else the
    # per-model 512x512 measurement scaled by processed pixels (EvaluateCost)
    seconds, cards, meta = zoo_seconds_per_image(results)
    families, family_card, family_file = family_runs(results)
    from omegaconf import OmegaConf

    from synthrel.zoo.registry import zoo_entries

    entries = zoo_entries(OmegaConf.to_container(OmegaConf.load(zoo_file)))
    floor = loader_floor(results)
    cost = EvaluateCost(entries, seconds, families, floor)
    grid = evaluation_grid()
    images = sum(k for _, k, _ in grid)
    evaluate = Row("evaluate", f"{len(entries)} models x {images} images ({len(grid)} sets)", len(entries) * images,
                   "image", None, "shard")
    compiled = [key for key in entries if cost.compiled(key)]
    missing = [key for key in entries if any(cost.image_seconds(key, size, name in OOD_SETS) is None
                                             for name, _, size in grid)]
    by_set = {}
    if not missing:
        for key in entries:
            for name, k, size in grid:
                by_set[name] = by_set.get(name, 0.0) + k * cost.image_seconds(key, size, name in OOD_SETS)
        sizes = sorted({size for _, _, size in grid})
        compile_s = sum(cost.compile_seconds(key, size) for key in entries for size in sizes)
        if compile_s:
            by_set["compile (once per model and input size)"] = compile_s
        total = sum(by_set.values())
        used = [f for f, keys in ((family_file, compiled), (" + ".join(ZOO_RUNS), entries),
                                  (floor and floor.source, entries)) if f and keys]
        card = " / ".join(sorted({*cards.values(), *([family_card] if compiled else [])}))
        evaluate.seconds_1 = total
        sources = " + ".join(dict.fromkeys(part for f in used for part in f.split(" + ")))  # the floor's file is a family's
        evaluate.measured = Measured(evaluate.units / total, card, sources, fast_path=EVALUATE_FAST_PATH, detail=
                                     "compiled family rates at the real sizes where measured, else bf16 eager 512x512 "
                                     "scaled by processed pixels (the note says which)")
    if compiled:
        measured = sorted({families[entries[k].family]["model"] for k in compiled})
        evaluate.note = (f"{len(compiled)} models of {len(measured)} families at compiled rates at the real sizes "
                         f"({family_file}: {', '.join(measured)} measured; other members = their eager 512x512 time "
                         "scaled x the family's compiled/eager ratio), compile counted once per (model, size)")
        if len(entries) > len(compiled):
            evaluate.note += (f"; {len(entries) - len(compiled)} models (families not measured): s/img measured at "
                              "512x512 (bf16 eager, batch 8), x processed pixels per image")
    else:
        evaluate.note = ("eager rates (no eval_families JSON): per model s/img measured at 512x512 (bf16 eager, "
                         "batch 8), x processed pixels per image")
    fast = " ".join(f"stages.evaluate.{k}={str(v).lower()}" for k, v in EVALUATE_FAST_PATH.items())
    evaluate.note += f"; the fast path `{fast}` (the stage's defaults are fp32 eager: mmseg's numerics, slower)"
    if missing:
        evaluate.note += f"; not measured for {', '.join(missing)}"
    if floor is not None:
        bound = [k for k in entries if (cost.gpu_seconds(k, (1024, 2048), True) or 0) < cost.host_seconds((1024, 2048))]
        evaluate.note += (f"; every rate capped at the loader's capacity through PNG files ({floor.source}: "
                          f"{floor.per_s:g} img/s at 1024x2048, {floor.detail}, {floor.card}; scaled by pixels): "
                          f"{len(bound)} "
                          "models are loader-bound at 1024x2048")
    evaluate.note += ("; real sets counted whole (Cityscapes val, ACDC train, IDD val): the spec gives no "
                      "`<set>_test` or calibration-split counts for real_split=test")
    rows.append(evaluate)
    flops = _load(results, FLOPS.name)
    forecast = forecast_row(entries, cost, flops, card=evaluate.measured.card if evaluate.measured else "",
                            source=evaluate.measured.source if evaluate.measured else "")
    # calibrate: one global fit per (model, calibration set); fit time scaled by the set's pixels
    sets = [per_domain] * 10 + [n("cityscapes_val"), n("all_domains"), n("all_domains_but_rain")]
    calib = throughput(results, "calibrate")
    fits = Row("calibrate", f"{len(entries)} models x {len(sets)} calibration sets, global TS (ece_grid)",
               len(entries) * len(sets), "fit", calib, "shard",
               note="fit time x pixels of the set / pixels of the measured 512-image set")
    if calib is not None:
        measured_images = 512
        fits.seconds_1 = len(entries) * sum(k / measured_images for k in sets) / calib.per_s
    rows.append(fits)
    steps = n("rba_runs") * n("rba_steps")
    for name, label in (("rba_swin_b", "Swin-B"), ("rba_swin_l", "Swin-L")):
        rows.append(rba_row(results, flops, name, Row(
            f"ood_detection: RbA {label} fine-tunes", f"3 runs x {n('rba_steps')} steps x batch 16", steps // 2,
            "step", throughput(results, name), "runs", runs=n("rba_runs") // 2)))
    rba_images = ood + n("road_anomaly") + n("smiyc_ra21") + n("smiyc_ro21") + n("fs_lost_and_found")
    for name, label in (("rba_swin_b", "Swin-B"), ("rba_swin_l", "Swin-L")):
        fp32, bf16 = throughput(results, name, "predict_img_s"), throughput(results, name, "predict_img_s_bf16")
        if bf16 is not None:
            bf16 = replace(bf16, fast_path={"rba.precision": "bf16"}, default=fp32)
        rows.append(rba_row(results, flops, name, Row(
            f"ood_detection: RbA {label} scoring", f"4 models x {rba_images} OOD images", 4 * rba_images, "image",
            bf16 or fp32, "shard",
            note="measured at 1024x2048 (the smaller sets cost less)" + (
                "; the fast path `stages.ood_detection.rba.precision=bf16` (the stage's default is fp32, RbA's own "
                "numerics: docs/benchmarks.md#rba-bf16)" if bf16 else "; fp32"))))
    fid_images = sum(3 * (per_domain + real) for real in [n("acdc_per_condition")] * 4 + [n("idd_val")])
    rows.append(Row("fid", "5 domains x (SD1.5, SDXL, Cityscapes) vs real, features per pair", fid_images, "image",
                    throughput(results, "fid_features"), "shard"))
    scaling = ddp_scaling(results)
    count_flops(rows, entries, flops)
    for row in [*rows, forecast]:
        row.wall_8_h = spread_8(row, scaling)
    meta["forecast"] = forecast
    meta["evaluate_hours_1_by_set"] = {k: round(v / 3600, 3) for k, v in by_set.items()}
    return rows, scaling, meta


def _set_tflop(flops: dict, key: str, sets: list[tuple[str, int, tuple[int, int]]]) -> float | None:
    """TFLOP of model `key` on `sets` (name, images, size) from flops.json's evaluate counts."""
    per_size = flops.get("evaluate", {}).get(key)
    if per_size is None or any(f"{h}x{w}" not in per_size for _, _, (h, w) in sets):
        return None
    return sum(k * per_size[f"{h}x{w}"] for _, k, (h, w) in sets)


def rba_loader_cost(results: Path) -> tuple[float, str] | None:
    """CPU seconds per 1024x2048 sample of the RbA fine-tune's loader (decode, resize, crop, colour, collate) and
    where they were measured, from `python -m benchmarks.run rbaloader`'s JSONs: a run beside a GPU first (the
    machine that trains), else the slowest CPU measured. None when there is none."""
    runs = [(path, json.loads(path.read_text())) for path in sorted(results.glob("rba_loader_*.json"))]
    if not runs:
        return None
    path, d = max(runs, key=lambda r: (r[1].get("gpu") is not None, r[1]["sample_ms"] + r[1]["collate_ms"]))
    where = f"beside an {d['gpu']}" if d.get("gpu") else "no GPU"
    return (d["sample_ms"] + d["collate_ms"]) / 1000, f"{d['cpu']}, {d['cores']} cores, {where}: {path.name}"


def rba_row(results: Path, flops: dict | None, stage: str, row: Row) -> Row:
    """`row` (an RbA fine-tune or scoring row of `stage`) counted on the head its throughput JSON measured
    (settings.head; absent: RBA_DEFAULT_HEAD, the benchmark's head before #36; no JSON: the released head, which
    the benchmark measures), its note saying which."""
    from benchmarks.stage_throughput import RBA_DEFAULT_HEAD, RBA_HEADS

    key, flop, per = (("per_s", "train_step", "optimiser step") if row.unit == "step" else
                      ("predict_img_s", "predict_image", "scored image"))
    found = throughput_json(results, stage, key)
    released = RBA_HEADS[stage]
    head = released if found is None else (found[1].get("settings") or {}).get("head", RBA_DEFAULT_HEAD)
    row.flops_key = ("rba", stage.removeprefix("rba_"), head, flop)
    if found is None:
        return row
    rerun = f"`python -m benchmarks.run throughput --stages {' '.join(RBA_HEADS)}`"
    heads = ((flops or {}).get("rba") or {}).get(stage.removeprefix("rba_")) or {}
    counted, ours = heads.get(head) or {}, heads.get(released) or {}
    if head == released:
        what = f"measured on RbA's released head ({released})"
    elif head == RBA_DEFAULT_HEAD:
        shape = (f" ({counted['encoder_layers']} encoder + {counted['decoder_layers']} decoder layers)"
                 if {"encoder_layers", "decoder_layers"} <= set(counted) else "")
        less = f" {100 * (1 - ours[flop] / counted[flop]):.0f} %" if flop in counted and flop in ours else ""
        what = (f"measured on transformers' default head{shape}; RbA's released head ({released}) costs{less} less "
                f"per {per}: pessimistic until {rerun} is rerun")
    else:
        what = f"measured on the head {head}, not RbA's released {released}: rerun {rerun}"
    if row.unit == "step":
        from synthrel.ood_detection.job import finetune_precision
        from synthrel.runtime import AUTO_WORKERS

        measured, stage_runs = (found[1].get("settings") or {}).get("precision", "32-true"), finetune_precision(
            "auto", "cuda")
        batch = found[1].get("batch") or 16
        cost = rba_loader_cost(results)
        if cost is None:
            loader = "the loader's CPU cost is not measured (`python -m benchmarks.run rbaloader`)"
        else:
            ceiling = AUTO_WORKERS / (batch * cost[0])
            loader = (f"the stage's {AUTO_WORKERS} loader workers allow at most {ceiling:.2f} step/s "
                      f"({1000 * cost[0]:.0f} ms of CPU per sample; {cost[1]})")
            if row.measured is not None and ceiling < row.measured.per_s:  # the GPU would wait for its batches
                loader += f": counted at that ceiling, not at the GPU's {row.measured.per_s:.2f}"
                row.measured = replace(row.measured, per_s=ceiling)
        what += (f"; in {measured}, as the stage trains on a GPU (precision: auto, RbA's AMP), on GPU-resident "
                 f"batches: {loader}; not measured through the stage (docs/benchmarks.md#rba-amp)"
                 if measured == stage_runs else
                 f"; in {measured}, while the stage trains in {stage_runs} on a GPU (precision: auto): rerun {rerun}")
    row.note = f"{row.note}; {what}" if row.note else what
    return row


#: row -> the path of its TFLOP per unit in flops.json (image, or optimiser step); the RbA rows: Row.flops_key
PER_UNIT = {"train_controlnet SD1.5": ("sd15", "train_image"), "train_controlnet SDXL": ("sdxl", "train_image"),
            "generate SD1.5": ("sd15", "generate_image"), "generate SDXL": ("sdxl", "generate_image"),
            "inpaint": ("inpaint", "inpaint"), "inpaint: refine": ("inpaint", "refine"), "caption": ("caption", "image"),
            "inpaint: Grounded-SAM": ("grounded_sam", "image"), "fid": ("fid", "image")}


def count_flops(rows: list[Row], entries: dict, flops: dict | None) -> None:
    """Each row's counted TFLOP (Row.tflop) from flops.json; rows it does not count (or an older file lacks)
    keep None."""
    if flops is None:
        return
    for row in rows:
        path = row.flops_key or PER_UNIT.get(row.stage)
        if path:
            value = flops
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            row.tflop = None if value is None else row.units * value
        elif row.stage == "evaluate":
            counts = [_set_tflop(flops, key, evaluation_grid()) for key in entries]
            row.tflop = None if None in counts else sum(counts)


def forecast_sets() -> list[tuple[str, int, tuple[int, int]]]:
    """What a user's forecast evaluates (synthrel/conf/stage/forecast.yaml's predictors): the generator's five
    synthetic sets (SD1.5, the default backbone) and the inpainted OOD set."""
    ood = next(s for s in evaluation_grid() if s[0] == "OOD objects (inpainted)")
    return [(f"synthetic SD1.5 {d}", n("samples_per_domain"), (512, 512)) for d in DOMAINS] + [ood]


def forecast_row(entries: dict, cost: EvaluateCost, flops: dict | None, card: str = "", source: str = "") -> Row:
    """One new model on forecast_sets(): the zoo's mean model (its seconds, compile and FLOPs averaged over the
    zoo), at the evaluate row's rates (EvaluateCost)."""
    sets = forecast_sets()
    row = Row(FORECAST, f"1 model x {sum(k for _, k, _ in sets)} images (5 synthetic sets + OOD set)",
              sum(k for _, k, _ in sets), "image", None, "pairs",
              note="the mean paper40 model at the evaluate row's rates (bf16, compiled), compile included once per "
                   "input size (and in each pair); its real sets (forecast vs actual) are optional and not counted; "
                   "8 GPUs: shard=i/n deals out whole (model, set) pairs, so the OOD set's pair bounds the wall time")
    per_image = {(name, key): cost.image_seconds(key, size, name in OOD_SETS) for name, _, size in sets
                 for key in entries}
    if entries and None not in per_image.values():
        mean = lambda values: sum(values) / len(entries)  # noqa: E731
        compile_at = {size: mean(cost.compile_seconds(key, size) for key in entries) for _, _, size in sets}
        per_set = [mean(k * per_image[name, key] for key in entries) for name, k, _ in sets]
        row.pair_hours = [(s + compile_at[size]) / 3600 for s, (_, _, size) in zip(per_set, sets, strict=True)]
        row.seconds_1 = sum(per_set) + sum(compile_at.values())
        row.measured = Measured(row.units / row.seconds_1, card, source, "as the evaluate row")
    counts = [_set_tflop(flops or {}, key, sets) for key in entries]
    if entries and None not in counts:
        row.tflop = sum(counts) / len(counts)
    return row


def packed_runs(rows: list[Row]) -> float:
    """Wall hours of every independent run of `rows` together on GPUS GPUs (longest run first, each to the least
    loaded GPU): Swin-B's and Swin-L's fine-tunes share the node instead of running one row after the other."""
    loads = [0.0] * GPUS
    for hours in sorted((r.hours_1 / r.runs for r in rows for _ in range(r.runs)), reverse=True):
        loads[loads.index(min(loads))] += hours
    return max(loads)


def hours(rows: list[Row]) -> tuple[float, float]:
    """GPU-hours on 1 GPU and wall hours on the GPUS-GPU node of the measured rows, unrounded."""
    measured = [r for r in rows if r.hours_1 is not None]
    runs = [r for r in measured if r.spread == "runs"]
    return (sum(r.hours_1 for r in measured),
            sum(r.wall_8_h for r in measured if r.wall_8_h is not None and r not in runs) + packed_runs(runs))


def summarise(rows: list[Row], scaling: Measured | None) -> dict:
    """Totals over the measured rows; the target is missed when even they exceed it, unknown when they do not
    and some stage is not measured."""
    measured = [r for r in rows if r.hours_1 is not None]
    unmeasured = [r.stage for r in rows if r.hours_1 is None]
    total_1, total_8 = hours(rows)
    runs = [r for r in measured if r.spread == "runs"]
    dominant = max(measured, key=lambda r: r.wall_8_h or 0.0) if measured else None
    return {"total_gpu_hours_1": round(total_1, 2), "total_wall_hours_8": round(total_8, 2),
            "not_measured": unmeasured, "complete": not unmeasured,
            "target_wall_hours_8": TARGET_HOURS_8,
            "target_met": False if total_8 > TARGET_HOURS_8 else (None if unmeasured else True),
            "dominant_stage": dominant.stage if dominant else None,
            "dominant_share_8": round(dominant.wall_8_h / total_8, 3) if dominant and total_8 else None,
            "runs_wall_hours_8": round(packed_runs(runs), 2),
            "ddp_scaling_2gpu": None if scaling is None else scaling.per_s}


def totals(rows: list[Row], forecast: Row, scaling: Measured | None) -> dict:
    """The three totals of TOTALS on 1 GPU and on GPUS, their ideal time at peak and how far each is from its
    target (x = the measured total / the target; <= 1 is met)."""
    picks = {"paper": rows, "paper_released_controlnet": [r for r in rows if r.stage != RELEASED],
             "forecast": [forecast]}
    out = {}
    for name, (what, target, gpus) in TOTALS.items():
        part = summarise(picks[name], scaling)
        counted = [r for r in picks[name] if r.ideal_hours_1 is not None and r.hours_1 is not None]
        value = hours(picks[name])[0 if gpus == 1 else 1]  # unrounded: 15.1 min is not within 15
        out[name] = {"what": what, "stages": [r.stage for r in picks[name]],
                     "hours_1": part["total_gpu_hours_1"], "wall_hours_8": part["total_wall_hours_8"],
                     "not_measured": part["not_measured"],
                     "ideal_hours_1": round(sum(r.ideal_hours_1 for r in counted), 3),
                     "counted_hours_1": round(sum(r.hours_1 for r in counted), 3),
                     "target_hours": target, "target_gpus": gpus,
                     "times_target": round(value / target, 3) if value else None,
                     "target_met": None if not value or part["not_measured"] else value <= target}
    return out


def _fmt(value, digits=2):
    return "not measured" if value is None else f"{value:.{digits}f}"


def table(rows: list[Row], summary: dict, scaling: Measured | None, by_set: dict | None = None,
          sums: dict | None = None, forecast: Row | None = None) -> str:
    out = [f"{'stage':36} {'work':>12} {'rate (units/s)':>15} {'TFLOP/unit':>10} {'1 GPU h':>8} {'ideal h':>8} "
           f"{'MFU':>5} {'8 GPUs h':>8}  card / source", "-" * 150]
    for r in [*rows, *([forecast] if forecast else [])]:
        if r is forecast:
            out.append("-" * 150 + "\nnot part of the paper (the forecast path's own row):")
        rate = "not measured" if r.measured is None else f"{r.measured.per_s:.3g} {r.unit}/s"
        src = "" if r.measured is None else f"{r.measured.card} / {r.measured.source}"
        per_unit = "-" if r.tflop is None else f"{r.tflop / r.units:.3g}"
        ideal = "-" if r.ideal_hours_1 is None else f"{r.ideal_hours_1:.2f}"
        mfu = "-" if r.mfu is None else f"{100 * r.mfu:.0f} %"
        out.append(f"{r.stage:36} {r.units:>12,.0f} {rate:>15} {per_unit:>10} {_fmt(r.hours_1):>8} {ideal:>8} "
                   f"{mfu:>5} {_fmt(r.wall_8_h):>8}  {src}")
        out.append(f"{'':36} {r.work}" + (f"; {r.note}" if r.note else ""))
        if r.stage == "evaluate" and by_set:
            out.append(f"{'':36} by set (1 GPU h): " + ", ".join(f"{k} {v:.2f}" for k, v in by_set.items()))
    out.append("-" * 150)
    lower = " (lower bound: stages not measured are left out)" if summary["not_measured"] else ""
    out.append(f"total: {summary['total_gpu_hours_1']:.2f} GPU-hours on 1 GPU; {summary['total_wall_hours_8']:.2f} h "
               f"wall on one {GPUS}-GPU node{lower}")
    if summary["not_measured"]:
        out.append(f"not measured: {', '.join(summary['not_measured'])} (run `python -m benchmarks.run throughput`)")
    met = {True: "met", False: "NOT met" + (" (even without the stages not measured)" if summary["not_measured"]
                                            else ""), None: "unknown (stages not measured)"}[summary["target_met"]]
    out.append(f"target: the whole paper in <= {TARGET_HOURS_8:g} h on one {GPUS}-GPU node: {met}")
    if summary["dominant_stage"]:
        out.append(f"dominant stage on {GPUS} GPUs: {summary['dominant_stage']} "
                   f"({100 * summary['dominant_share_8']:.0f} % of the node's wall time)")
    out.append(f"{GPUS}-GPU column: sharded stages / {GPUS}; RbA fine-tunes one run per GPU (in the total, all "
               f"of their runs share the node: {summary['runs_wall_hours_8']:.2f} h); ControlNet training is "
               "one DDP run at the per-GPU efficiency measured on 2 GPUs "
               + ("(not measured)" if scaling is None else
                  f"({scaling.per_s:.3f}x on 2 GPUs = {scaling.per_s / 2:.2f} per GPU, {scaling.card}, "
                  f"{scaling.source}), assumed to hold on {GPUS} GPUs: not measured on {GPUS}; SDXL's step of 32 "
                  f"images over {GPUS} GPUs is {32 // GPUS} per GPU without accumulation, counted at the one-GPU "
                  "rate of batch 8 (a smaller micro-batch's rate is not measured compiled)"))
    out.append("cards differ between rows (each row names its own); work counts and their sources: COUNTS in "
               "benchmarks/budget.py")
    out.append(f"ideal: the row's FLOPs (docs/bench_results/flops.json, `python -m benchmarks.run flops`) at "
               f"{PEAK_TFLOPS:g} TFLOP/s dense bf16 (H100/H200 SXM datasheet); MFU = ideal / measured; '-': "
               "not counted (calibrate: a temperature fit on logits, no matmul or convolution: not FLOP-bound); caption, "
               "Grounded-SAM, RbA scoring and FID were measured in fp32 (their throughput JSONs), against the bf16 "
               "peak; the RbA fine-tunes in the precision their notes name")
    for t in (sums or {}).values():
        where = "1 GPU" if t["target_gpus"] == 1 else f"one {t['target_gpus']}-GPU node"
        far = "-" if t["times_target"] is None else (f"{t['times_target']:.3g}x the target, "
                                                     + {True: "met", False: "NOT met", None: "unknown"}[t["target_met"]])
        out.append(f"total, {t['what']}: {t['hours_1']:.2f} h on 1 GPU, {t['wall_hours_8']:.2f} h on one {GPUS}-GPU "
                   f"node; ideal of its counted rows {t['ideal_hours_1']:.2f} h (measured {t['counted_hours_1']:.2f})"
                   f"; target <= {t['target_hours']:g} h on {where}: {far}"
                   + (f" (not measured: {', '.join(t['not_measured'])})" if t["not_measured"] else ""))
    return "\n".join(out)


#: the package-data copy of the rates that the pipeline quotes (preflight's GPU time, gpu_check's stage table):
#: the package is installed as a wheel and cannot read docs/bench_results at run time
RATES = ROOT / "synthrel" / "measured_rates.json"


def rates_data(rows: list[Row], summary: dict) -> dict:
    """What RATES holds: each row's rate, card, source and 1-GPU hours at the paper's work counts, by row."""
    out = {}
    for r in rows:
        m = r.measured
        out[r.stage] = {"stage": r.stage.split()[0].rstrip(":"), "work": r.work, "units": r.units, "unit": r.unit,
                        "per_s": None if m is None else round(m.per_s, 6), "card": None if m is None else m.card,
                        "source": None if m is None else m.source, "conditions": None if m is None else m.detail,
                        "hours_1": None if r.hours_1 is None else round(r.hours_1, 4)}
        if m is not None and m.fast_path:
            out[r.stage]["fast_path"] = m.fast_path
            out[r.stage]["default"] = None if m.default is None else {
                "per_s": round(m.default.per_s, 6), "conditions": m.default.detail, "source": m.default.source}
        if r.compile_trade is not None:
            out[r.stage]["compile"] = r.compile_trade
        if r.checkpointing is not None:
            out[r.stage]["checkpointing"] = r.checkpointing
    return {"written_by": "python -m benchmarks.run budget --write-rates (from docs/bench_results)",
            "rows": out, "total_gpu_hours_1": summary["total_gpu_hours_1"], "not_measured": summary["not_measured"]}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.run budget", description=__doc__.split("\n")[0])
    p.add_argument("--results", default=str(RESULTS), help="folder of the measured JSONs")
    p.add_argument("--zoo", default=str(ZOO), help="the zoo whose models are evaluated")
    p.add_argument("--json", default=None, help="also write the table as JSON here (default $OUT/budget.json)")
    p.add_argument("--write-rates", action="store_true", help=f"rewrite {RATES.relative_to(ROOT)} (package data: "
                   "the rates preflight and +experiment=gpu_check quote) from these results")
    args = p.parse_args(argv)
    rows, scaling, meta = build_rows(Path(args.results), Path(args.zoo))
    summary = summarise(rows, scaling)
    if args.write_rates:
        RATES.write_text(json.dumps(rates_data(rows, summary), indent=1) + "\n")
        print(f"wrote {RATES}", flush=True)
    forecast = meta.pop("forecast")
    sums = totals(rows, forecast, scaling)
    print(table(rows, summary, scaling, meta["evaluate_hours_1_by_set"], sums, forecast), flush=True)
    as_dict = lambda r: {**asdict(r), "hours_1": r.hours_1, "ideal_hours_1": r.ideal_hours_1, "mfu": r.mfu}  # noqa: E731
    res = {"rows": [as_dict(r) for r in rows], "forecast_row": as_dict(forecast), "totals": sums,
           "peak_tflops": PEAK_TFLOPS, "summary": summary,
           "counts": {k: {"value": v, "source": s} for k, (v, s) in COUNTS.items()},
           "evaluation_grid": [dict(name=a, images=b, size=list(c)) for a, b, c in evaluation_grid()],
           "zoo_runs": meta}
    write_result(res, "budget.json", args.json)
    return res


if __name__ == "__main__":
    main()
