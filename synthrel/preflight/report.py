"""The preflight's printed report: one line per weight and dataset, the fix under each blocking item, the total
to download, what needs the network when offline, GPU memory and time estimates per stage, and the disk that
train_controlnet will fill against the free space.

GPU figures come from the peaks measured in docs/benchmarks.md (H100, fp16 generation, bf16 evaluation),
fitted linearly in the batch size; where nothing was measured the estimate is a lower bound from the
parameter count and says so.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from synthrel.preflight.needs import Need
from synthrel.runstats import CHECKPOINTING_MARGIN, at_settings, checkpointing_cost

#: (GB at batch 0, GB per image) fitted to the measured peaks of docs/benchmarks.md
GENERATE_FIT = {"sd15": (5.1, 0.63), "sdxl": (15.1, 4.9)}  # 5.7/10.2/25.2 GB at 1/8/32; 20.0/34.7/54.2 at 1/4/8
INPAINT_FIT = (3.6, 0.6)  # 4.2 / 8.4 GB at batch 1 / 8
GROUNDED_SAM_GB = 3.3  # SAM ViT-H (641M) + Grounding DINO tiny (172M) weights in fp32


def human(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def gpu_estimates(cfg: DictConfig, stages: list[str]) -> dict[str, str]:
    """Stage -> estimated peak GPU memory, with what the figure rests on."""
    if OmegaConf.select(cfg, "profile.tiny", default=False) and OmegaConf.select(
            cfg, "profile.model_size", default="tiny") != "real":  # the smoke profile's models are real-size
        return {"all stages": "tiny models: run on CPU, < 1 GB"}
    out = {}
    for stage in stages:
        spec = cfg.stages[stage]
        batch = int(spec.get("batch_size", 1) or 1)
        if stage == "generate":
            name = str(OmegaConf.select(cfg, "backbone.name"))
            base, per = GENERATE_FIT.get(name, GENERATE_FIT["sd15"])
            out[stage] = (f"~{base + per * batch:.0f} GB ({name}, batch {batch}, fp16; measured on an H100, "
                          "docs/benchmarks.md; a smaller card: lower stages.generate.batch_size)")
        elif stage == "inpaint":
            base, per = INPAINT_FIT
            out[stage] = (f"~{base + per * batch + GROUNDED_SAM_GB:.0f} GB (SD1.5 inpainting, batch {batch}, fp16, "
                          "+ Grounded-SAM weights in fp32)")
        elif stage == "evaluate":
            out[stage] = (f"~4-11 GB at batch 4, bf16 (measured: PSPNet-R18 3.5, DeepLabV3+-R101 6.0, SegFormer-B5 "
                          f"8.5-10.5 GB); fp32 about twice; this run: batch {batch}, {spec.get('precision')}")
        elif stage == "train_controlnet":
            sdxl = str(OmegaConf.select(cfg, "backbone.name")) == "sdxl"
            floor = 34 if sdxl else 10
            out[stage] = (f">= {floor} GB per device: frozen base + ControlNet weights, gradients and AdamW state "
                          f"in fp32; activations (batch {batch}) come on top "
                          "(gradient_checkpointing=true reduces them)")
            cost = checkpointing_cost("sdxl") if sdxl else None
            if cost and cost.get("compiled_off"):  # the peaks `gradient_checkpointing: auto` decides with
                eager, off = cost["peak_gib"], cost["compiled_off"]["peak_gib"]
                out[stage] += (f"; measured at 1024 px, bf16-mixed, batch 8: gradient checkpointing in both networks "
                               f"41.3 GiB, in the ControlNet only {eager:.1f} GiB eager (46.9 compiled), none "
                               f"{off:.1f} GiB compiled (eager: out of memory on an 80 GB H100); auto picks none for a "
                               f"compiled run where the card holds {off:.1f} x {CHECKPOINTING_MARGIN:g}, else the "
                               f"ControlNet only where it holds {eager:.1f} x {CHECKPOINTING_MARGIN:g}")
        elif stage == "caption":
            out[stage] = "~2-4 GB (BLIP-large fp32 weights 1.9 GB + beam search); not measured"
        elif stage == "ood_detection":
            out[stage] = "~1-3 GB (Mask2Former Swin-B/L inference); fine-tuning: more, not measured"
        elif stage == "fid":
            out[stage] = "< 2 GB (Inception-V3)"
    return out


def _made_counts(cfg: DictConfig) -> dict[str, int]:
    """Stage -> images per set it is configured to write (the sets later stages of the same run read)."""
    stages = cfg.get("stages") or {}
    made = {}
    if "generate" in stages:
        spec = stages.generate
        made["generate"] = spec.samples_per_domain_all * len(spec.domains) if spec.pooled else spec.num_samples
    if "inpaint" in stages:  # every attempt counted as accepted (an upper bound), as the budget does
        spec = stages.inpaint
        made["inpaint"] = len(spec.objects or spec.all_objects) * spec.samples_per_object
    return made


def _need_images(need: Need, made: dict[str, int]) -> tuple[int, str] | None:
    """(images of a dataset need, how known): counted on disk by the preflight, the count an earlier stage of
    this run is configured to write, or the dataset's published size (not on disk yet); None when unknown."""
    if need.status.startswith("made by"):
        maker = need.status.removeprefix("made by").strip().split()[0]
        return (made[maker], f"written by {maker}") if maker in made else None
    if need.status == "present":
        return need.extra["images"], "on disk"
    if need.extra.get("expected_images"):
        return need.extra["expected_images"], "published size"
    return None


def run_work(cfg: DictConfig, stages: list[str], needs: list[Need] = ()) -> dict[str, dict]:
    """Stage -> {budget row: (units of this run, how they were counted)}: the work counts that, with the rates of
    `python -m benchmarks.run budget` (synthrel/measured_rates.json), give this run's GPU time. A row whose count
    rests on data not on disk has units None."""
    from synthrel.runstats import BACKBONE_LABELS

    backbone = str(OmegaConf.select(cfg, "backbone.name"))
    label = BACKBONE_LABELS.get(backbone, backbone)
    made = _made_counts(cfg)
    datasets = [n for n in needs if n.kind == "dataset" and n.key.startswith("datasets.")]

    def read_by(stage: str) -> list[Need]:
        return [need for need in datasets if stage in need.stage.split(", ")]

    def count(stage: str, names) -> tuple[int | None, str]:
        images: dict[str, tuple[int, str] | None] = {}  # dataset name -> its count, as `stage` reads it
        for need in read_by(stage):
            name = need.key.split(".")[1]
            images[name] = images.get(name) or _need_images(need, made)
        names = list(dict.fromkeys(str(n) for n in names))
        unknown = [n for n in names if images.get(n) is None]
        if unknown:
            return None, f"not on disk to count: {', '.join(unknown)}"
        return sum(images[n][0] for n in names), " + ".join(f"{n} {images[n][0]} ({images[n][1]})" for n in names)

    out = {}
    for stage in stages:
        spec = cfg.stages[stage]
        if stage == "generate":
            per_set = spec.samples_per_domain_all if spec.pooled else spec.num_samples
            n = len(spec.domains) * per_set
            how = (f"pooled set of {len(spec.domains)} domains x {per_set}" if spec.pooled
                   else f"{len(spec.domains)} domain(s) x {per_set} images")
            out[stage] = {f"generate {label}": (n, how)}
        elif stage == "train_controlnet":
            devices = spec.get("devices", 1)
            world = devices if isinstance(devices, int) else len(devices) if isinstance(devices, list) else 1
            n = spec.max_steps * spec.batch_size * spec.accumulate_grad_batches * world
            out[stage] = {f"train_controlnet {label}": (n, f"{spec.max_steps} steps x {spec.batch_size} x "
                                                           f"{spec.accumulate_grad_batches} x {world} device(s)")}
        elif stage == "inpaint":
            objects = len(spec.objects or spec.all_objects)
            item = (objects * spec.samples_per_object, f"{objects} objects x {spec.samples_per_object}")
            out[stage] = {"inpaint": item, "inpaint: Grounded-SAM": item, **({"inpaint: refine": item}
                                                                            if spec.refine else {})}
        elif stage == "caption":  # one need per split of the captioned dataset
            splits = [(need.what, _need_images(need, made)) for need in read_by(stage)]
            known = [c for _, c in splits if c is not None]
            how = " + ".join(f"{what} {c[0]} ({c[1]})" for what, c in splits if c is not None)
            out[stage] = {"caption": (sum(c[0] for c in known), how) if splits and len(known) == len(splits)
                          else (None, "not on disk to count")}
        elif stage == "evaluate":
            from synthrel.zoo.registry import zoo_entries

            models = len(spec.models or zoo_entries(OmegaConf.to_container(spec.zoo, resolve=True)))
            n, how = count(stage, spec.datasets)
            out[stage] = {"evaluate": (None if n is None else models * n, f"{models} models x ({how})")}
        elif stage == "fid":
            n, how = count(stage, (side for pair in spec.pairs for side in (pair.real, pair.synthetic)))
            out[stage] = {"fid": (n, how)}
        elif stage == "ood_detection":
            out[stage] = _ood_work(spec, lambda names: count("ood_detection", names))
    return out


def _ood_work(spec, count) -> dict:
    from synthrel.ood_detection.job import finetune_settings, rba_arch

    rba = spec.get("rba") or {}
    ft = finetune_settings(rba.get("finetune"))
    models = [str(m) for m in (rba.get("models") or {})]
    rows = {}
    if ft["enabled"]:
        steps = ft["max_steps"]
        for arch in dict.fromkeys(rba_arch(str(b)) for b in ft["bases"]):
            runs = sum(rba_arch(str(b)) == arch for b in ft["bases"]) * len(ft["variants"])
            rows[f"ood_detection: RbA {arch} fine-tunes"] = (runs * steps, f"{runs} run(s) x {steps} steps")
        models += [f"{b}+{v}" for b in ft["bases"] for v in ft["variants"]]
    if models:
        n, how = count(rba.get("datasets") or spec.datasets)
        for arch in dict.fromkeys(rba_arch(m) for m in models):
            k = sum(rba_arch(m) == arch for m in models)
            rows[f"ood_detection: RbA {arch} scoring"] = (None if n is None else k * n, f"{k} model(s) x ({how})")
    return rows


def _duration(hours: float) -> str:
    return f"{hours:.2f} h" if hours >= 0.1 else f"{hours * 60:.1f} min"


def _at_run_settings(spec, row: dict) -> tuple[float, str]:
    """The rate of budget row `row` for this run's settings (synthrel.runstats.at_settings: a row counted at a
    fast path, evaluate in bf16 compiled or inpaint at batch 8, gives a run at the stage's defaults its default
    rate), and a caveat: where no rate at this run's settings is measured, the row's own, said to be the fast
    path's."""
    like = at_settings(row, lambda key: OmegaConf.select(spec, key))
    if like is not None:
        return like["per_s"], ""
    path = " ".join(f"{key}={str(value).lower()}" for key, value in row["fast_path"].items())
    return row["per_s"], f" (the fast path's rate, `{path}`: this run's settings are not measured)"


def _row_seconds(spec, stage: str, row: dict, units: int, rates: dict) -> tuple[float, str]:
    """Seconds of `units` of budget row `row`, and at what rate (_at_run_settings): where the row carries a
    measured compile trade (train_controlnet, generate, inpaint), compiled plus its one-time compile or eager, as
    the stage's `compile` setting decides for this many units (synthrel.runstats.compile_choice: the budget's rule
    too)."""
    from synthrel.runstats import compile_choice

    per_s, caveat = _at_run_settings(spec, row)
    trade = row.get("compile")
    if not trade:
        return units / per_s, f"at {per_s:.3g}/s{caveat}"
    setting, resolution = spec.get("compile"), spec.get("resolution")
    if stage == "inpaint":  # a torch.compile mode or null; its refinement call follows the inpainting call's choice
        setting, resolution = ("auto" if setting == "auto" else setting is not None), spec.patch_size
        decider = rates["inpaint"].get("compile") or trade
    else:
        decider = trade
    on, _ = compile_choice(setting, key=f"stages.{stage}", cuda=True, images_per_device=units,
                           resolution=resolution, measured=decider)
    if not on:
        return units / trade["eager_per_s"], f"eager at {trade['eager_per_s']:.3g}/s"
    compiled = per_s if row.get("fast_path") else trade["compiled_per_s"]  # the trade: at the stage's defaults
    return (units / compiled + trade["compile_s"],
            f"compiled at {compiled:.3g}/s + {trade['compile_s']:.0f} s of compile{caveat}")


def gpu_hours(cfg: DictConfig, stages: list[str], needs: list[Need] = ()) -> dict[str, str]:
    """Stage -> estimated hours on one GPU of THIS run's work (run_work), at the measured rates that
    `python -m benchmarks.run budget` uses (synthrel/measured_rates.json, written by its --write-rates). Where a
    count rests on data not on disk, or a stage's work is not counted here (calibrate), the paper's count
    stands in and the line says so."""
    if OmegaConf.select(cfg, "profile.tiny", default=False):
        return {}
    from synthrel.runstats import measured_rates, rates_of

    rates = measured_rates()
    work = run_work(cfg, stages, needs)
    out = {}
    for stage in stages:
        rows = rates_of(stage, str(OmegaConf.select(cfg, "backbone.name")))
        if not rows:
            continue
        counted = work.get(stage, {})
        parts, hours = [], 0.0
        for name, r in rows.items():
            if name not in counted and stage in work:
                continue  # a call this run does not make (no refinement, the other RbA backbone)
            units, how = counted.get(name, (None, "not counted per run"))
            if units is None:
                per_s, caveat = _at_run_settings(cfg.stages[stage], r)
                hours += r["hours_1"] * r["per_s"] / per_s
                parts.append(f"{name}: the paper's {r['units']:,.0f} {r['unit']}s ({how}) at {per_s:.3g}/s{caveat}")
            else:
                seconds, at = _row_seconds(cfg.stages[stage], stage, r, units, rates)
                hours += seconds / 3600
                parts.append(f"{name}: {units:,.0f} {r['unit']}s ({how}) {at}")
        if parts:
            sources = sorted({f"{rates[n]['card']}, {rates[n]['source']}" for n in rows})
            out[stage] = f"~{_duration(hours)} on 1 GPU (" + "; ".join(parts) + "; measured: " + "; ".join(sources) + ")"
    return out


def disk_estimates(cfg: DictConfig, stages: list[str]) -> dict[str, str]:
    """Stage -> the bytes it will write at its peak against the free space of its output folder (train_controlnet:
    its checkpoints and final ControlNet, counted as the stage counts them before its first step)."""
    if "train_controlnet" not in stages:
        return {}
    from pathlib import Path

    from synthrel.controlnet.job import free_bytes, gb, planned_disk_need

    spec = cfg.stages.train_controlnet
    out = Path(str(spec.output_dir))
    need = planned_disk_need(str(cfg.backbone.pretrained), conditioning=spec.conditioning, max_steps=int(spec.max_steps),
                             checkpoint_every_n_steps=int(spec.checkpoint_every_n_steps),
                             keep_checkpoints=int(spec.keep_checkpoints), checkpoint_dir=out / "checkpoints")
    if need is None:
        return {"train_controlnet": "unknown until the base model's UNet config is on disk (the stage checks it "
                                    "before its first step)"}
    free = free_bytes(out)
    text = f"{gb(need.total)} under {out} ({need.breakdown()}); {gb(free)} free"
    if need.total > free:
        text += (" -- NOT ENOUGH: the stage will stop before its first step; free space, set "
                 "stages.train_controlnet.output_dir to a larger disk or keep_checkpoints=0")
    return {"train_controlnet": text}


def _line(need: Need) -> str:
    size = f"{'' if need.exact_size else '~'}{human(need.size)}, " if need.size else ""
    tag = f"  [{size}preflight=download]" if need.downloadable else ""
    source = need.source.rpartition("/")[2] if need.kind == "url" else need.source
    if need.extra.get("on_disk"):
        tag = f"  [{human(need.extra['on_disk'])} on disk]"
    text = f"  {need.status:<20} {need.what}: {source or '-'}{tag}  ({need.stage})"
    if need.detail and need.status not in ("present", "in HF cache"):
        text += "\n" + "\n".join(f"      {line}" for line in need.detail.splitlines())
    if need.fix and need.blocking:
        text += "\n" + "\n".join(f"      fix: {line}" if i == 0 else f"      {line}"
                                 for i, line in enumerate(need.fix.splitlines()))
    return text


def render(needs: list[Need], cfg: DictConfig, stages: list[str], offline: bool, command: str) -> str:
    task = OmegaConf.select(cfg, "task_name", default="run")
    profile = OmegaConf.select(cfg, "profile.name", default="?")
    lines = [f"synthrel preflight: {task} (profile {profile}; stages {', '.join(stages) or 'none'})"]
    for title, kinds in (("weights", ("hub", "url", "local", "manual", "external")),
                         ("artifacts of earlier runs", ("artifact",)), ("datasets", ("dataset",))):
        group = [n for n in needs if n.kind in kinds]
        if group:
            lines.append(f"{title}:")
            lines += [_line(n) for n in group]
    todo = [n for n in needs if n.downloadable]
    known = sum(n.size for n in todo if n.size)
    unknown = sum(1 for n in todo if not n.size)
    lines.append(f"to download: {len(todo)} item(s), {'~' if any(not n.exact_size for n in todo) else ''}"
                 f"{human(known)}" + (f" + {unknown} of unknown size" if unknown else ""))
    if offline and todo:
        urls = [n for n in todo if n.kind == "url"]
        hosts = ", ".join(sorted({n.source.split("/")[2] for n in urls}))
        parts = [n.source for n in todo if n.kind == "hub"] + ([f"{len(urls)} file(s) from {hosts}"] if urls else [])
        lines.append("offline (HF_HUB_OFFLINE=1): these need the network: " + "; ".join(parts))
    gpu = gpu_estimates(cfg, stages)
    if gpu:
        lines.append("GPU memory (estimates):")
        lines += [f"  {stage:<16} {text}" for stage, text in gpu.items()]
    hours = gpu_hours(cfg, stages, needs)
    if hours:
        lines.append("GPU time (estimates: this run's work counts at the measured rates of `python -m "
                     "benchmarks.run budget`):")
        lines += [f"  {stage:<16} {text}" for stage, text in hours.items()]
    disk = disk_estimates(cfg, stages)
    if disk:
        lines.append("disk (estimates):")
        lines += [f"  {stage:<16} {text}" for stage, text in disk.items()]
    blocking = [n for n in needs if n.blocking]
    if blocking:
        lines.append(f"NOT READY: {len(blocking)} item(s) missing or broken; "
                     + (f"`{command} preflight=download` fetches the public ones" if todo else "see the fixes above"))
    else:
        lines.append("ready: everything this run reads is present")
    return "\n".join(lines)
