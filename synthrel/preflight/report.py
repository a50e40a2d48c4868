"""The preflight's printed report: one line per weight and dataset, the fix under each blocking item, the total
to download, what needs the network when offline, and GPU memory estimates per stage.

GPU figures come from the peaks measured in docs/benchmarks.md (H100, fp16 generation, bf16 evaluation),
fitted linearly in the batch size; where nothing was measured the estimate is a lower bound from the
parameter count and says so.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from synthrel.preflight.needs import Need

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
                          "docs/benchmarks.md)")
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
            if sdxl:
                out[stage] += ("; measured at 1024 px, bf16-mixed: batch 8 with gradient checkpointing 41.5 GiB, "
                               "batch 4 without 57.5 GiB, batch 8 without: out of memory on an 80 GB H100")
        elif stage == "caption":
            out[stage] = "~2-4 GB (BLIP-large fp32 weights 1.9 GB + beam search); not measured"
        elif stage == "ood_detection":
            out[stage] = "~1-3 GB (Mask2Former Swin-B/L inference); fine-tuning: more, not measured"
        elif stage == "fid":
            out[stage] = "< 2 GB (Inception-V3)"
    return out


def gpu_hours(cfg: DictConfig, stages: list[str]) -> dict[str, str]:
    """Stage -> estimated hours on one GPU at the paper's work counts, from the measured rates that
    `python -m benchmarks.run budget` uses (synthrel/measured_rates.json, written by its --write-rates)."""
    if OmegaConf.select(cfg, "profile.tiny", default=False):
        return {}
    from synthrel.runstats import rates_of

    out = {}
    for stage in stages:
        rows = rates_of(stage, str(OmegaConf.select(cfg, "backbone.name")))
        if rows:
            hours = sum(r["hours_1"] for r in rows.values())
            out[stage] = f"~{hours:.2f} h on 1 GPU (" + "; ".join(
                f"{r['work']}: {r['units']:,.0f} {r['unit']}s at {r['per_s']:.3g}/s, {r['card']}, {r['source']}"
                for r in rows.values()) + ")"
    return out


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
    hours = gpu_hours(cfg, stages)
    if hours:
        lines.append("GPU time (estimates at the paper's work counts, measured rates of `python -m benchmarks.run "
                     "budget`):")
        lines += [f"  {stage:<16} {text}" for stage, text in hours.items()]
    blocking = [n for n in needs if n.blocking]
    if blocking:
        lines.append(f"NOT READY: {len(blocking)} item(s) missing or broken; "
                     + (f"`{command} preflight=download` fetches the public ones" if todo else "see the fixes above"))
    else:
        lines.append("ready: everything this run reads is present")
    return "\n".join(lines)
