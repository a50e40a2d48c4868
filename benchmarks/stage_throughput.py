"""Throughput of the paper's stages that have no benchmark of their own, at real size with random weights (#20).

Each measurement runs synthrel's own code path of the stage on the real architecture (configs written here, from
the hub models' config.json values; nothing is downloaded) and writes one JSON per stage,
`throughput_<stage>_<card>.json` (`throughput_<stage>_compile_<card>.json` with `--train-compile`), named with its card (`torch.cuda.get_device_name()`), which
`python -m benchmarks.run budget` reads (copy them to docs/bench_results/). Stages:

- `caption`: the caption stage's `BlipCaptioner` (BLIP-large: ViT-L/16 at 384, BERT-base decoder; beams 8, 5..32
  new tokens, batch 8, fp32 as the stage runs it) on 1024x2048 frames. Random weights rarely emit the end token,
  so every caption runs to 32 tokens: an upper bound on decoding (the paper's captions are about 12 words).
- `controlnet_train_sd15`, `controlnet_train_sdxl`: `ControlNetModule` under a Lightning Trainer, as the
  train_controlnet stage runs it (frozen base in bf16 when `--train-precision bf16-mixed`, the ControlNet fp32,
  AdamW, no gradient clipping as the stage's default; batch 8 per step, accumulate 2, or `--train-batch`,
  `--train-accumulate`, `--train-checkpointing`, `--train-compile`), on square crops written in the Cityscapes layout
  (512 / 1024 px); SD1.5 (UNet 320-1280, CLIP ViT-L text) and SDXL (UNet 320-1280 with 10-layer blocks, CLIP
  ViT-L + OpenCLIP bigG text, fp32 VAE). Out of memory at batch 8: retried with gradient checkpointing in the
  ControlNet only, then in both networks (the one that ran is recorded).
- `grounded_sam`: the inpaint stage's `GroundedSam` (Grounding DINO tiny: Swin-T + BERT-base, 900 queries,
  images resized to 800; SAM ViT-H at 1024) on 512x512 zooms, batch 1 as the stage's default and batch 8, in fp32
  (the top-level rate) and bf16 side by side (`runs`, `stages.inpaint.detector_precision`); detection and
  segmentation timed apart (random weights find no box, so `segment` is timed on a given box).
- `rba_swin_b`, `rba_swin_l`: one `RbAFineTuner` optimisation step (RbA's released Mask2Former, `swin_b_1dl` /
  `swin_l_1dl` of synthrel.ood_detection.convert.ARCHS as the ood_detection stage builds it: Swin-B/L at window
  12, 100 queries, one masked-attention decoder layer, a res5-only pixel decoder; the JSON's settings name the
  `head`; only the class head and mask MLP train; fp32; batch 16 of 512x1024 crops with an outlier square), and
  `rba_predict` on one 1024x2048 image.
- `calibrate`: `fit_temperature_scaler` (ece_grid, 950 temperatures; global and per_class) on one synthetic
  domain's calibration sample: 512 images x 20,000 pixels x 19 logits.
- `fid_features`: the FID stage's resize (`resize_batch`, PIL bicubic to 299x299 on the host) and Inception-V3
  pool features (torchvision's architecture, 2048 features; the stage's torch-fidelity FID Inception has the same
  layers) on 1024x2048 images, batch 32.

    python -m benchmarks.run throughput                                  # every stage (GPU)
    python -m benchmarks.run throughput --stages controlnet_train_sdxl
    python -m benchmarks.run throughput --tiny --stages calibrate caption  # tiny architectures on CPU (smoke)
    python -m benchmarks.run throughput --levers [VARIANT ...]           # training-step levers (train_levers.py)

JSONs go to $OUT (or --out).
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks import device_kernels, write_result
from synthrel.tiny.real_configs import (  # the real-size recipes (one home)
    CLIP_G_TEXT,
    GROUNDING_DINO_TINY,
    SAM_VIT_H,
)

STAGES = ("caption", "controlnet_train_sd15", "controlnet_train_sdxl", "grounded_sam", "rba_swin_b", "rba_swin_l",
          "calibrate", "fid_features")
#: the RbA stages' heads: RbA's released architectures (synthrel.ood_detection.convert.ARCHS), the ood_detection
#: stage's default `rba.models.<stage>.arch` (synthrel/conf/stage/ood_detection.yaml)
RBA_HEADS = {"rba_swin_b": "swin_b_1dl", "rba_swin_l": "swin_l_1dl"}
#: the head the RbA JSONs without a `head` setting measured: transformers' default Mask2Former head (before #36)
RBA_DEFAULT_HEAD = "transformers_default"
#: the RbA measurement: (batch, crop) of one optimisation step, the size of one scored image; tiny: (batch, crop)
RBA_BATCH, RBA_PREDICT, RBA_TINY = (16, (512, 1024)), (1024, 2048), (2, (64, 128))


def card_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'; 'cpu' -> 'cpu'."""
    found = re.search(r"\b([A-Z]\d{2,4}[A-Z]?)\b", name)
    return found.group(1).lower() if found else re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_calls(fn, warmup: int, repeats: int, device) -> float:
    """Mean seconds of `repeats` calls of `fn` after `warmup` calls (device synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def frames(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth RGB frames (stage_bench's content)."""
    from benchmarks.stage_bench import _smooth_image

    rng = np.random.default_rng(seed)
    return [_smooth_image(rng, height, width) for _ in range(n)]


def _peak_gib(device):
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


# ----------------------------------------------------------------------------------------------- captioning
def _real_blip(folder: Path) -> Path:
    """Salesforce/blip-image-captioning-large's architecture with random weights and a 30,524-token vocabulary."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    from synthrel.tiny.blip import SPECIAL_TOKENS

    folder.mkdir(parents=True, exist_ok=True)
    tokens = list(SPECIAL_TOKENS) + [f"w{i}" for i in range(30524 - len(SPECIAL_TOKENS))]
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in tokens))
    tokenizer = BertTokenizer.from_pretrained(folder, bos_token="[DEC]", model_max_length=512)
    ids = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    config = BlipConfig(
        text_config=dict(vocab_size=len(tokens), hidden_size=768, encoder_hidden_size=1024, intermediate_size=3072,
                         num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=512,
                         pad_token_id=ids["[PAD]"], bos_token_id=ids["[DEC]"], eos_token_id=ids["[SEP]"],
                         sep_token_id=ids["[SEP]"]),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=384, patch_size=16),
        projection_dim=512)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 384, "width": 384}),
                  tokenizer=tokenizer).save_pretrained(folder)
    return folder


def bench_caption(args, device, work: Path) -> dict:
    from synthrel.captions.blip import BlipCaptioner
    from synthrel.tiny.blip import build_tiny_blip

    folder = build_tiny_blip(work / "blip") if args.tiny else _real_blip(work / "blip")
    captioner = BlipCaptioner(str(folder), device)  # the caption stage's defaults: 8 beams, 5..32 new tokens
    batch = 8
    images = frames(batch, *((64, 128) if args.tiny else (1024, 2048)))
    captions = []
    seconds = timed_calls(lambda: captions.append(captioner(images)), 1, args.repeats, device)
    tokens = [len(captioner.processor.tokenizer(c).input_ids) for c in captions[-1]]
    return {"unit": "image", "per_s": batch / seconds, "batch": batch, "s_per_batch": seconds,
            "settings": {"num_beams": 8, "max_new_tokens": 32, "dtype": "fp32", "image": "1024x2048 -> 384"},
            "mean_caption_tokens": float(np.mean(tokens)),
            "note": "random weights: captions run to max_new_tokens (an upper bound on decoding)"}


# ----------------------------------------------------------------------------------------- ControlNet training
def _base_pipeline(kind: str, tiny: bool, work: Path, device=None):
    """The frozen base (UNet, VAE, text encoder(s), tokenizer(s), scheduler) at real size, random weights."""
    from synthrel.tiny.diffusion import _build_pipeline

    if tiny:
        return _build_pipeline(kind, 0, work / "tokenizer")

    from benchmarks.gen_bench import CASES
    from synthrel.tiny.diffusion import _clip_tokenizer

    case = CASES[(kind, False)]
    tokenizer = _clip_tokenizer(work / "tokenizer")
    vocab = len(tokenizer)
    ids = dict(vocab_size=vocab, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    torch.manual_seed(0)
    with torch.device(device):  # random init of 3.5 B parameters (SDXL) is minutes on the host
        return _real_base(kind, case, tokenizer, ids)


def _real_base(kind, case, tokenizer, ids):
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from benchmarks.multigpu import CLIP_L_TEXT
    from synthrel.tiny.diffusion import SD_SCHEDULER

    common = dict(vae=AutoencoderKL(**case["vae"]), unet=UNet2DConditionModel(**case["unet"]),
                  scheduler=DDIMScheduler(**SD_SCHEDULER), tokenizer=tokenizer,
                  text_encoder=CLIPTextModel(CLIPTextConfig(**ids, **CLIP_L_TEXT)))
    if kind == "sdxl":
        return StableDiffusionXLPipeline(**common, tokenizer_2=tokenizer, force_zeros_for_empty_prompt=True,
                                         text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**ids, **CLIP_G_TEXT)))
    return StableDiffusionPipeline(**common, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def bench_controlnet_train(kind: str, args, device, work: Path) -> dict:
    import pytorch_lightning as pl

    from benchmarks.multigpu import step_timer, write_captions, write_cityscapes_layout
    from synthrel.controlnet.data import ControlNetTrainData, load_captions
    from synthrel.controlnet.module import ControlNetModule, vae_precision_choice
    from synthrel.data.cityscapes import CityscapesDataset
    from synthrel.runtime import auto_workers

    resolution = 32 if args.tiny else {"sd15": 512, "sdxl": 1024}[kind]
    batch, accumulate = (2, 1) if args.tiny else (args.train_batch, args.train_accumulate)
    warmup, steps = (1, 2) if args.tiny else (3, {"sd15": 20, "sdxl": 6}[kind])
    data_root = work / f"cityscapes_{kind}"
    ids = write_cityscapes_layout(data_root, "train", 2 * batch, resolution, seed=0)
    captions = write_captions(work / f"captions_{kind}.jsonl", ids, seed=0)
    data = ControlNetTrainData(CityscapesDataset(data_root, split="train"), load_captions(captions), resolution,
                               "label_id", 0)
    base = _base_pipeline(kind, args.tiny, work, device)
    precision = "32" if args.tiny else args.train_precision
    result = None
    tries = {"auto": (False, "controlnet", True), "on": (True,), "controlnet": ("controlnet",),
             "off": (False,)}[args.train_checkpointing]
    for checkpointing in tries:
        module = ControlNetModule(base, data, conditioning_channels=1, lr=1e-5, batch_size=batch, seed=0,
                                  gradient_checkpointing=checkpointing,
                                  vae_fp32=vae_precision_choice(None, sdxl=kind == "sdxl", fixed_vae=False,
                                                                precision=precision)[0],
                                  compile=args.train_compile,
                                  num_workers=0 if args.tiny else auto_workers())  # the stage's auto
        timer = step_timer(device.type == "cuda")
        profiler = gpu_busy_profile(warmup + steps, args.train_profile, device.type == "cuda",
                                    timed=partial(timer.rates, warmup, batch * accumulate, last=warmup + steps))
        trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
                             max_steps=warmup + steps + args.train_profile, accumulate_grad_batches=accumulate,
                             gradient_clip_val=None, callbacks=[timer, profiler], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             use_distributed_sampler=False, num_sanity_val_steps=0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        out_of_memory = False
        try:
            trainer.fit(module)
        except torch.OutOfMemoryError:
            if checkpointing is True or args.train_checkpointing != "auto":
                raise
            out_of_memory = True
        if out_of_memory:  # outside the except block, so that the traceback no longer holds the tensors
            print(f"controlnet_train_{kind}: out of memory at batch {batch} with gradient checkpointing "
                  f"{checkpointing}; again with more", flush=True)
            del module, trainer, timer
            gc.collect()
            base.unet.float()  # setup() cast it to the frozen dtype; the next ControlNet is copied from it in fp32
            torch.cuda.empty_cache()
            continue
        rates = timer.rates(warmup, batch * accumulate, last=warmup + steps)
        result = {"unit": "image", "per_s": rates["images_per_s"], "batch": batch,
                  "settings": {"resolution": resolution, "precision": precision, "accumulate_grad_batches": accumulate,
                               "gradient_clip_val": None,
                               "gradient_checkpointing": checkpointing, "compile": args.train_compile,
                               "optimizer": "AdamW over the ControlNet",
                               "timed_optimizer_steps": rates.get("timed_steps"), "loader_workers": module.num_workers,
                               "first_step_s": rates.get("first_step_s")},
                  "steps_per_s": rates["steps_per_s"], "peak_gib": _peak_gib(device)}
        if profiler.report:
            result["profile"] = profiler.report
        break
    return result


def busy_share(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """The share of [start, end] covered by the union of `intervals` (kernels overlap on streams)."""
    covered, reach = 0.0, start
    for a, b in sorted(intervals):
        a, b = max(a, reach), min(b, end)
        if b > a:
            covered += b - a
            reach = b
    return covered / (end - start) if end > start else float("nan")


def gpu_busy_profile(first_step: int, steps: int, cuda: bool, timed=None):
    """A Lightning callback that profiles `steps` optimizer steps from optimizer step `first_step` on (torch.profiler,
    after the timed steps: its overhead stays out of the rate). `report`: the share of the profiled wall time the GPU
    ran a kernel (what a host-bound loop leaves idle), the top kernels by GPU time and host ops by self CPU time, the
    latter also by caller (host_self_by_caller), and the calls that made the host wait for the GPU (host_waits).
    `timed()`, the timed steps' rates, is printed before profiling starts: a run killed after them keeps its rate
    in the log."""
    import pytorch_lightning as pl

    class BusyProfile(pl.Callback):
        def __init__(self):
            self.report, self.prof = {}, None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if steps and self.prof is None and not self.report and trainer.global_step >= first_step:
                if timed is not None:
                    print(f"timed steps, before the profile: {timed()}", flush=True)
                activities = [torch.profiler.ProfilerActivity.CPU] + (
                    [torch.profiler.ProfilerActivity.CUDA] if cuda else [])
                self.prof = torch.profiler.profile(activities=activities)
                self.prof.__enter__()

        def on_train_end(self, trainer, pl_module):
            if self.prof is None:
                return
            if cuda:
                torch.cuda.synchronize()
            self.prof.__exit__(None, None, None)
            began = time.perf_counter()
            recorded = self.prof.events()
            events = device_kernels(recorded)
            cpu = [e for e in recorded if e.device_type == torch.autograd.DeviceType.CPU]
            start = min(e.time_range.start for e in cpu)
            end = max(e.time_range.end for e in [*cpu, *events])
            kernels = [(e.time_range.start, e.time_range.end) for e in events]
            by_kernel: dict[str, float] = {}
            for e in events:  # device events only: the ops and annotations above them would count them again
                by_kernel[e.name[:90]] = by_kernel.get(e.name[:90], 0.0) + e.time_range.elapsed_us()
            by_cpu = sorted(self.prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
            self.report = {"optimizer_steps": steps, "wall_ms": round((end - start) / 1e3, 1),
                           "gpu_busy_share": round(busy_share(kernels, start, end), 4) if cuda else None,
                           "top_kernels_ms": {k: round(v / 1e3, 1) for k, v in
                                              sorted(by_kernel.items(), key=lambda kv: -kv[1])[:12]},
                           "top_host_self_ms": {e.key[:90]: round(e.self_cpu_time_total / 1e3, 1) for e in by_cpu},
                           "top_host_self_by_caller_ms": host_self_by_caller(cpu),
                           "host_waits": host_waits(cpu),
                           # cudaMalloc retries after freeing the cache: each synchronises the device
                           "allocator_retries": torch.cuda.memory_stats().get("num_alloc_retries") if cuda else None,
                           "processing_s": round(time.perf_counter() - began, 1)}
            self.prof = None

    return BusyProfile()


#: CUDA runtime calls that block the host until the GPU catches up
HOST_WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def _caller(event):
    """The nearest enclosing event that is not an aten op: its autograd node in the backward, else an annotation."""
    caller = event.cpu_parent
    while caller is not None and caller.name.startswith("aten::"):
        caller = caller.cpu_parent
    return "(top level)" if caller is None else caller.name[:60]


def host_self_by_caller(events, top: int = 12) -> dict[str, float]:
    """Host self time (ms) by `op < caller` (_caller): a list input's shapes are not recorded, so `aten::cat`'s
    calls are told apart by what made them."""
    totals: dict[str, float] = {}
    for e in events:
        key = f"{e.name[:60]} < {_caller(e)}"
        totals[key] = totals.get(key, 0.0) + e.self_cpu_time_total
    return {k: round(v / 1e3, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])[:top]}


def host_waits(events) -> dict[str, dict]:
    """The calls that made the host wait for the GPU (HOST_WAITS), by `call < op < caller`, with their count and
    time: after each the GPU idles until the host has launched the next kernels."""
    found: dict[str, dict] = {}
    for e in events:
        if e.name in HOST_WAITS:
            op = e.cpu_parent.name[:60] if e.cpu_parent is not None else "(top level)"
            entry = found.setdefault(f"{e.name} < {op} < {_caller(e.cpu_parent or e)}", {"calls": 0, "ms": 0.0})
            entry["calls"] += 1
            entry["ms"] += e.cpu_time_total / 1e3
    return {k: {"calls": v["calls"], "ms": round(v["ms"], 1)} for k, v in
            sorted(found.items(), key=lambda kv: -kv[1]["ms"])}


# ------------------------------------------------------------------------------------------------ Grounded-SAM
def grounded_sam_processors():
    """The processors of grounding-dino-tiny (a bert-base-uncased-like vocabulary written here) and sam-vit-huge."""
    import transformers
    from transformers import BertTokenizer, GroundingDinoProcessor, SamProcessor

    from synthrel.tiny.grounded_sam import bert_vocab

    dino_images = getattr(transformers, "GroundingDinoImageProcessor", None) or transformers.GroundingDinoImageProcessorPil
    sam_images = getattr(transformers, "SamImageProcessor", None) or transformers.SamImageProcessorPil
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_text("\n".join(bert_vocab()) + "\n", encoding="utf-8")
        tokenizer = BertTokenizer.from_pretrained(tmp, do_lower_case=True)
    return GroundingDinoProcessor(dino_images(), tokenizer), SamProcessor(sam_images())


def real_grounded_sam(sam_device=None):
    """(Grounding DINO tiny, its processor, SAM ViT-H, its processor) at real size, random weights; SAM built on
    `sam_device` (flops counts it on the meta device)."""
    from transformers import (
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        SamConfig,
        SamModel,
        SamVisionConfig,
    )

    dino_processor, sam_processor = grounded_sam_processors()
    torch.manual_seed(0)
    # the defaults are IDEA-Research/grounding-dino-tiny: Swin-T, BERT-base, d_model 256, 6 + 6 layers, 900 queries
    dino = GroundingDinoForObjectDetection(GroundingDinoConfig(**GROUNDING_DINO_TINY))
    with torch.device(sam_device or "cpu"):
        sam = SamModel(SamConfig(vision_config=SamVisionConfig(**SAM_VIT_H)))  # facebook/sam-vit-huge
    return dino, dino_processor, sam, sam_processor


#: the batches the Grounded-SAM benchmark times: the stage's default and a GPU-sized one
GROUNDED_SAM_BATCHES = (1, 8)


def bench_grounded_sam(args, device, work: Path) -> dict:
    from synthrel.ood_objects.grounded_sam import DETECTOR_PRECISIONS, GroundedSam

    if args.tiny:
        from synthrel.tiny.grounded_sam import build_tiny_grounded_sam

        folders = build_tiny_grounded_sam(work / "gsam")
        models = GroundedSam.from_pretrained(str(folders["grounding_dino"]), str(folders["sam"]), device)
    else:
        models = GroundedSam(*real_grounded_sam(), device=device)
    size = 64 if args.tiny else 512
    box = (size * 0.2, size * 0.2, size * 0.8, size * 0.8)
    runs, ratio = [], {}
    for batch in GROUNDED_SAM_BATCHES:
        zooms = frames(batch, size, size)  # the first is batch 1's zoom
        by_precision = {}
        for precision in DETECTOR_PRECISIONS:  # fp32 first: the reference
            run, first = _grounded_sam_run(models, precision, zooms, box, args.repeats, device)
            by_precision[precision] = run, first
            runs.append({**run, **_grounded_sam_diffs(first, by_precision["fp32"][1])})
        ratio[str(batch)] = by_precision["bf16"][0]["per_s"] / by_precision["fp32"][0]["per_s"]
    base = runs[0]
    return {"unit": "image", "per_s": base["per_s"], "batch": 1, "detect_s": base["detect_s"],
            "segment_s": base["segment_s"], "settings": {"zoom": f"{size}x{size}", "dtype": "fp32",
                                                         "deformable_attention": "PyTorch (disable_custom_kernels)"},
            "runs": runs, "ratio_bf16_vs_fp32": ratio,
            "note": "per image: detect + segment (every image segmented: an upper bound); per_s, detect_s and "
                    "segment_s: fp32 at batch 1; `runs`: fp32 and bf16 (`stages.inpaint.detector_precision`) at "
                    "batch 1 and 8, each run's first image against fp32's at its batch (random weights: the best "
                    "box is a near-tie, so a box difference is a rank flip rather than bf16's rounding)",
            "peak_gib": base["peak_gib"]}


def _grounded_sam_run(models, precision: str, zooms: list[np.ndarray], box, repeats: int, device):
    """One (precision, batch) timing of detect + segment with `models`' weights, and the first zoom's best box (at
    thresholds 0, so that random weights have one) and mask, for the differences against fp32."""
    from synthrel.ood_objects.grounded_sam import GroundedSam

    def detector(**thresholds):
        return GroundedSam(models.dino, models.dino_processor, models.sam, models.sam_processor, device,
                           precision=precision, **thresholds)

    timed, any_score = detector(), detector(box_threshold=0.0, text_threshold=0.0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    detect_s = timed_calls(lambda: timed.detect(zooms, "polar bear"), 2, repeats, device)
    segment_s = timed_calls(lambda: timed.segment(zooms, [box] * len(zooms)), 2, repeats, device)
    first = any_score.detect(zooms[:1], "polar bear")[0].box, timed.segment(zooms[:1], [box])[0].mask
    return {"precision": precision, "batch": len(zooms), "detect_s": detect_s, "segment_s": segment_s,
            "per_s": len(zooms) / (detect_s + segment_s), "peak_gib": _peak_gib(device)}, first


def _grounded_sam_diffs(first, reference) -> dict:
    """The largest box-coordinate difference in pixels and the mask IoU of `first` against `reference`."""
    (box, mask), (ref_box, ref_mask) = first, reference
    union = (mask | ref_mask).sum()
    return {"max_box_diff_px": float(np.abs(np.subtract(box, ref_box)).max()),
            "mask_iou_vs_fp32": float((mask & ref_mask).sum() / union) if union else 1.0}


# ---------------------------------------------------------------------------------------------------- RbA
def mask2former_config(name: str, tiny: bool):
    """The Mask2Former the RbA benchmark fine-tunes: RbA's released head of `name` (RBA_HEADS), built as the
    ood_detection stage builds it from the architecture; tiny: the tiny_models stage's tiny RbA."""
    from synthrel.ood_detection.convert import ARCHS
    from synthrel.ood_detection.convert import mask2former_config as arch_config
    from synthrel.tiny.mask2former import TINY_RBA_ARCH

    return arch_config(TINY_RBA_ARCH if tiny else ARCHS[RBA_HEADS[name]])


def _mask2former_folder(name: str, tiny: bool, folder: Path) -> Path:
    from synthrel.ood_detection.convert import rba_model_class

    torch.manual_seed(0)
    rba_model_class()(mask2former_config(name, tiny)).save_pretrained(folder)
    return folder


def rba_batch(batch: int, height: int, width: int, device=None) -> dict:
    """An RbA training batch: 32-px blocks of random trainIds (every class present at 512x1024) and an outlier square."""
    from synthrel.conventions import OOD_LABEL_ID

    h, w = height, width
    rng = np.random.default_rng(0)
    label = torch.from_numpy(np.kron(rng.integers(0, 19, (batch, h // 32, w // 32)), np.ones((1, 32, 32)))).long()
    outlier = torch.zeros_like(label)
    label[:, h // 2: h // 2 + h // 8, w // 3: w // 3 + h // 8] = OOD_LABEL_ID
    outlier[label == OOD_LABEL_ID] = 1
    return {"pixel_values": torch.randn(batch, 3, h, w, device=device), "label": label.to(device),
            "outlier_mask": outlier.to(device)}


def bench_rba(name: str, args, device, work: Path) -> dict:
    from synthrel.ood_detection.job import finetune_precision
    from synthrel.ood_detection.rba import RbAFineTuner, rba_predict

    module = RbAFineTuner(str(_mask2former_folder(name, args.tiny, work / name)), max_steps=5000).to(device)
    module.train()
    optimizer = module.configure_optimizers()["optimizer"]
    batch, (h, w) = RBA_TINY if args.tiny else RBA_BATCH
    data = rba_batch(batch, h, w, device)

    # the stage's precision (`finetune.precision: auto`): RbA's AMP on a GPU, as Lightning's 16-mixed runs it
    precision = finetune_precision("auto", device)
    scalers = {p: torch.amp.GradScaler(device.type, enabled=p == "16-mixed") for p in (precision, "32-true")}

    def step(precision):
        with torch.autocast(device.type, dtype=torch.float16, enabled=precision == "16-mixed"):
            loss = module.losses(data)["loss"]
        scaler = scalers[precision]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = timed_calls(lambda: step(precision), 2, args.repeats, device)
    peak = _peak_gib(device)
    fp32 = {} if precision == "32-true" else {
        "per_s_32_true": 1 / timed_calls(lambda: step("32-true"), 2, args.repeats, device)}
    image = frames(1, *((64, 128) if args.tiny else RBA_PREDICT))[0][None]
    module.eval()
    predict_s = timed_calls(lambda: rba_predict(module.model, image, device), 2, args.repeats, device)
    bf16_s = timed_calls(lambda: rba_predict(module.model, image, device, torch.bfloat16), 2, args.repeats, device)
    return {"unit": "step", "per_s": 1 / step_s, "batch": batch, "s_per_step": step_s, "peak_gib": peak, **fp32,
            "predict_img_s": 1 / predict_s, "predict_img_s_bf16": 1 / bf16_s,
            "predict_bf16_vs_fp32": rba_bf16_agreement(module.model, image, device),
            "settings": {"head": "tiny" if args.tiny else RBA_HEADS[name], "crop": f"{h}x{w}",
                         "precision": precision, "predict_dtype": "fp32 (predict_img_s), bf16 autocast "
                                                                   "(predict_img_s_bf16)",
                         "trainable": "class head + mask MLP",
                         "predict_image": "1024x2048" if not args.tiny else "64x128"}}


def rba_bf16_agreement(model, image: np.ndarray, device) -> dict:
    """How far `stages.ood_detection.rba.precision=bf16` moves RbA's scores on `image` from fp32: the largest score
    difference, and AUROC / FPR@95 against a centred square taken as OOD (sklearn on both score maps). With random
    weights this bounds the rounding, not a trained model's metric shift."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from synthrel.ood_detection.rba import rba_predict

    fp32, bf16 = (rba_predict(model, image, device, dtype)[0][0].double().cpu().numpy()
                  for dtype in (None, torch.bfloat16))
    h, w = fp32.shape
    ood = np.zeros((h, w), bool)
    ood[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = True

    def metrics(score):
        fpr, tpr, _ = roc_curve(ood.ravel(), score.ravel())
        return roc_auc_score(ood.ravel(), score.ravel()), float(fpr[np.searchsorted(tpr, 0.95)])

    (auroc32, fpr32), (auroc16, fpr16) = metrics(fp32), metrics(bf16)
    return {"max_abs_score_diff": float(np.abs(fp32 - bf16).max()), "score_range": float(np.ptp(fp32)),
            "auroc_fp32": auroc32, "auroc_bf16": auroc16, "fpr95_fp32": fpr32, "fpr95_bf16": fpr16}


# ------------------------------------------------------------------------------------------------ calibration
def bench_calibrate(args, device, work: Path) -> dict:
    from synthrel.calibration.temperature import fit_temperature_scaler

    images, per_image = (4, 500) if args.tiny else (512, 20000)
    rng = np.random.default_rng(0)
    n = images * per_image
    logits = (3 * rng.standard_normal((n, 19))).astype(np.float32)
    labels = rng.integers(0, 19, n).astype(np.uint8)
    labels[rng.random(n) < 0.1] = 255
    image_index = np.repeat(np.arange(images), per_image)
    fit_temperature_scaler(logits[:1000], labels[:1000], image_index=image_index[:1000], device=device)  # warm-up
    out = {}
    for method in ("global", "per_class"):
        _sync(device)
        start = time.perf_counter()
        fit_temperature_scaler(logits, labels, method=method, objective="ece_grid", image_index=image_index,
                               device=device)
        _sync(device)
        out[f"{method}_fit_s"] = time.perf_counter() - start
    return {"unit": "fit", "per_s": 1 / out["global_fit_s"], "batch": None, **out,
            "settings": {"images": images, "pixels_per_image": per_image, "objective": "ece_grid (950 T)"},
            "note": "per_s is global fits per second; per_class_fit_s is the per-class method"}


# ------------------------------------------------------------------------------------------------------ FID
def bench_fid_features(args, device, work: Path) -> dict:
    from synthrel.analysis.fid import TinyFeatureExtractor, resize_batch

    if args.tiny:
        net, resolution, batch = TinyFeatureExtractor(), (64, 64), 4
    else:
        from torchvision.models import inception_v3

        net, resolution, batch = inception_v3(weights=None, aux_logits=False, init_weights=False), (299, 299), 32
        net.fc = torch.nn.Identity()
    net = net.to(device).eval()
    images = frames(batch, *((64, 128) if args.tiny else (1024, 2048)))
    resize_s = timed_calls(lambda: resize_batch(images, resolution), 1, args.repeats, device)
    x = resize_batch(images, resolution).to(device)

    @torch.inference_mode()
    def forward():
        return net(x) if args.tiny else net(x.float() / 127.5 - 1)

    forward_s = timed_calls(forward, 2, args.repeats, device)
    return {"unit": "image", "per_s": batch / (resize_s + forward_s), "batch": batch,
            "resize_s_per_batch": resize_s, "forward_s_per_batch": forward_s,
            "settings": {"resolution": list(resolution), "source": "1024x2048", "dtype": "fp32"}}


BENCHES = {"caption": bench_caption, "controlnet_train_sd15": lambda *a: bench_controlnet_train("sd15", *a),
           "controlnet_train_sdxl": lambda *a: bench_controlnet_train("sdxl", *a),
           "grounded_sam": bench_grounded_sam, "rba_swin_b": lambda *a: bench_rba("rba_swin_b", *a),
           "rba_swin_l": lambda *a: bench_rba("rba_swin_l", *a), "calibrate": bench_calibrate,
           "fid_features": bench_fid_features}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run throughput", description=__doc__.split("\n")[0])
    p.add_argument("--stages", nargs="+", choices=[*STAGES, "all"], default=["all"])
    p.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 3; tiny 1)")
    p.add_argument("--train-precision", default="bf16-mixed", choices=["bf16-mixed", "16-mixed", "32"],
                   help="ControlNet training precision (the stage's default is 32, the official code's)")
    p.add_argument("--train-batch", type=int, default=8, help="ControlNet training batch per step")
    p.add_argument("--train-accumulate", type=int, default=2, help="ControlNet training accumulation steps")
    p.add_argument("--train-checkpointing", default="auto", choices=["auto", "on", "controlnet", "off"],
                   help="gradient checkpointing (on: both networks, controlnet: the ControlNet only); auto: off, "
                        "then controlnet, then on, each after an out-of-memory error")
    p.add_argument("--train-compile", action="store_true", help="ControlNet training with compile=true")
    p.add_argument("--train-profile", type=int, default=0, metavar="STEPS",
                   help="ControlNet training: profile STEPS optimizer steps after the timed ones (GPU busy share, "
                        "top kernels and host ops; see gpu_busy_profile)")
    p.add_argument("--tiny", action="store_true", help="tiny architectures on CPU (smoke test)")
    p.add_argument("--device", default=None, help="default: cuda if available (cpu with --tiny)")
    p.add_argument("--out", default=None, help="folder for the JSONs (default $OUT)")
    args = p.parse_args(argv)
    args.stages = list(STAGES) if "all" in args.stages else args.stages
    args.repeats = args.repeats or (1 if args.tiny else 3)
    args.device = args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    return args


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if "--levers" in argv:  # the training step's levers side by side: benchmarks/train_levers.py
        from benchmarks.train_levers import main as levers

        return levers(argv)
    args = parse_args(argv)
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results = {}
    with tempfile.TemporaryDirectory(prefix="stage_throughput_") as tmp:
        for stage in args.stages:
            work = Path(tmp) / stage
            work.mkdir()
            start = time.perf_counter()
            try:
                res = BENCHES[stage](args, device, work)
            except Exception as e:  # noqa: BLE001 - one stage failing must not lose the others' measurements
                res = {"error": f"{type(e).__name__}: {e}"[:500]}
            res = {"stage": stage, "device": card, "card": card_slug(card), "torch": torch.__version__,
                   "tiny": args.tiny, "wall_s": round(time.perf_counter() - start, 1),
                   "command": " ".join(["python -m benchmarks.run throughput", *argv]), **res}
            results[stage] = res
            compiled = "_compile" if args.train_compile and stage.startswith("controlnet_train") else ""
            name = f"throughput_{stage}{compiled}_{card_slug(card)}.json"  # the budget reads eager and compiled
            if args.out:
                write_result(res, name, Path(args.out) / name)
            else:
                write_result(res, name)
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items() if k != "command"}
            print(f"{stage}: {shown}", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


if __name__ == "__main__":
    main()
