"""ControlNet sampling throughput: the plain diffusers eager pipeline against synthrel's ControlNetSampler.

Both run in one process on the same inputs and per-image seeds, on the real SD1.5 (512²) and SDXL (1024²)
architectures with random weights (weights do not change the cost; no tokenizer or text encoder is needed,
prompt embeddings are passed). The ControlNet's zero convolutions get small random weights so that the control
path changes the images (a zero ControlNet would hide errors in it). Per batch size it reports images/s,
seconds per batch, peak GPU memory, the first call's extra time (compile, warm-up, graph capture), the ratio
synthrel/eager and the max/mean absolute uint8 pixel difference to the eager pipeline for the same seeds.

    python -m benchmarks.run gen                      # both models, full run (GPU)
    python -m benchmarks.run gen --model sd15 --quick # smoke run
    python -m benchmarks.run gen --tiny --quick       # tiny architectures, runs on CPU
    python -m benchmarks.run gen --model inpaint      # the OOD stage's inpainting + refinement (issue #8 item 4)

`--model inpaint` times the OOD-object stage's two diffusion calls on the real SD1.5-inpainting architecture
(9-channel UNet, PNDM as stable-diffusion-v1-5/stable-diffusion-inpainting ships it, 512² context patches with a box mask):
inpainting (strength 1, guidance 15, 50 steps) and refinement (strength 0.65, guidance 7.5, 50 steps), the
plain pipeline against the same pipeline after `synthrel.ood_objects.inpainting.accelerate_pipeline`.

JSON goes to $OUT/gen_bench.json when OUT is set (or to --json).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from contextlib import nullcontext

import torch

from benchmarks import write_result
from synthrel.tiny.real_configs import SD15_UNET, SD_VAE, SDXL_UNET, SDXL_VAE  # real-size recipes

#: Large bf16/fp16 matrix products on the H100 measured at about this rate (shared/bench/README.md).
H100_TFLOPS = 798.0

SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
VAE_TINY = dict(block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=1)
TINY_UNET = dict(block_out_channels=(32, 64), layers_per_block=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=32)

#: Each case: UNet config, VAE config, image size, text embedding width, pooled width (SDXL), guidance,
#: conditioning scale, batch sizes (full, quick). The real ones: synthrel/tiny/real_configs.py.
CASES = {
    ("sd15", False): dict(
        unet=SD15_UNET, vae=SD_VAE, size=512, embed_dim=768, pooled_dim=None, guidance=8.0, control_scale=1.0,
        batches=(1, 8, 16, 32), quick_batches=(1, 8)),
    ("sdxl", False): dict(
        unet=SDXL_UNET, vae=SDXL_VAE, size=1024, embed_dim=2048, pooled_dim=1280,
        guidance=10.0, control_scale=0.65, batches=(1, 4, 8), quick_batches=(1, 4)),
    ("sd15", True): dict(
        unet=dict(TINY_UNET, sample_size=8, cross_attention_dim=32, attention_head_dim=8),
        vae=dict(VAE_TINY, sample_size=64), size=64, embed_dim=32, pooled_dim=None, guidance=8.0, control_scale=1.0,
        batches=(1, 3), quick_batches=(1, 2)),
    ("sdxl", True): dict(
        unet=dict(TINY_UNET, sample_size=8, cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True,
                  addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                  projection_class_embeddings_input_dim=80),
        vae=dict(VAE_TINY, sample_size=64, scaling_factor=0.13025), size=64, embed_dim=64, pooled_dim=32,
        guidance=10.0, control_scale=0.65, batches=(1, 3), quick_batches=(1, 2)),
}
#: stable-diffusion-v1-5/stable-diffusion-inpainting's scheduler (PNDM, PLMS steps only), which the inpaint stage keeps
PNDM = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
#: (strength, guidance, steps) of the inpaint stage's two calls (synthrel/conf/stage/inpaint.yaml)
INPAINT_CALLS = {"inpaint": (1.0, 15.0, 50), "refine": (0.65, 7.5, 50)}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def build_pipeline(model: str, tiny: bool, device: torch.device, dtype: torch.dtype):
    """The diffusers ControlNet pipeline of `model` with random weights (built on `device`), and its case."""
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionControlNetPipeline,
        StableDiffusionXLControlNetPipeline,
        UNet2DConditionModel,
    )

    from synthrel.tiny.diffusion import open_control_path

    case = CASES[(model, tiny)]
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**case["unet"])
        controlnet = ControlNetModel.from_unet(unet)
        vae = AutoencoderKL(**case["vae"])
    open_control_path(controlnet, zero_conv_std=0.02)  # the control image must change the images (seeded above)
    scheduler = DDIMScheduler(**SCHEDULER)
    if model == "sdxl":
        pipe = StableDiffusionXLControlNetPipeline(
            vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
            controlnet=controlnet, scheduler=scheduler, add_watermarker=False)
    else:
        pipe = StableDiffusionControlNetPipeline(
            vae=vae, text_encoder=None, tokenizer=None, unet=unet, controlnet=controlnet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype), case


def make_inputs(case: dict, batch: int, device: torch.device, dtype: torch.dtype) -> dict:
    """Prompt embeddings, control images and per-image seeds for one batch (deterministic per batch size)."""
    from synthrel.jobs import item_seed

    gen = torch.Generator().manual_seed(1000 + batch)
    size = case["size"]
    inputs = dict(
        embeds=torch.randn(batch, 77, case["embed_dim"], generator=gen).to(device, dtype),
        control=torch.rand(batch, 3, size, size, generator=gen).to(device, dtype),
        seeds=[item_seed(0, i) for i in range(batch)],
        pooled=None,
    )
    if case["pooled_dim"]:
        inputs["pooled"] = torch.randn(batch, case["pooled_dim"], generator=gen).to(device, dtype)
    return inputs


def negatives(case: dict, device: torch.device, dtype: torch.dtype):
    """The cached unconditional embeddings: SD1.5 a fixed random "" stand-in, SDXL zeros (its real negative)."""
    if case["pooled_dim"]:
        return (torch.zeros(1, 77, case["embed_dim"], device=device, dtype=dtype),
                torch.zeros(1, case["pooled_dim"], device=device, dtype=dtype))
    gen = torch.Generator().manual_seed(7)
    return torch.randn(1, 77, case["embed_dim"], generator=gen).to(device, dtype), None


def eager_images(pipe, case, inputs, negative, steps: int):
    batch = len(inputs["seeds"])
    kwargs = dict(prompt_embeds=inputs["embeds"], negative_prompt_embeds=negative[0].expand(batch, -1, -1),
                  image=inputs["control"], num_inference_steps=steps, guidance_scale=case["guidance"],
                  controlnet_conditioning_scale=case["control_scale"], height=case["size"], width=case["size"],
                  generator=[torch.Generator().manual_seed(s) for s in inputs["seeds"]], output_type="np")
    if inputs["pooled"] is not None:
        kwargs.update(pooled_prompt_embeds=inputs["pooled"],
                      negative_pooled_prompt_embeds=negative[1].expand(batch, -1))
    images = pipe(**kwargs).images
    return torch.from_numpy((images * 255).round().astype("uint8"))  # what output_type="pil" does


def synthrel_images(sampler, case, inputs, steps: int):
    return sampler(inputs["embeds"], inputs["control"], inputs["seeds"], pooled_prompt_embeds=inputs["pooled"],
                   num_inference_steps=steps, guidance_scale=case["guidance"],
                   controlnet_conditioning_scale=case["control_scale"])


def measure(fn, repeats: int, device: torch.device) -> dict:
    """First call (warm-up: compile, capture, kernel selection) timed apart from the median of `repeats` calls."""
    cuda = device.type == "cuda"

    def timed():
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, out

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    first, out = timed()
    times = [timed()[0] for _ in range(repeats)]
    seconds = statistics.median(times)
    result = dict(first_call_s=round(first, 3), s_per_batch=round(seconds, 4),
                  warmup_extra_s=round(max(first - seconds, 0.0), 2))
    if cuda:
        result["peak_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result, out


def guided_step_flops(pipe, case, device, dtype) -> int:
    """FLOPs of one guided step (ControlNet + UNet on the CFG pair of one image), as shared/bench counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    latent = case["size"] // 8
    sample = torch.randn(2, 4, latent, latent, device=device, dtype=dtype)
    embeds = torch.randn(2, 77, case["embed_dim"], device=device, dtype=dtype)
    control = torch.rand(2, 3, case["size"], case["size"], device=device, dtype=dtype)
    added = {}
    if case["pooled_dim"]:
        added = dict(added_cond_kwargs=dict(text_embeds=torch.randn(2, case["pooled_dim"], device=device, dtype=dtype),
                                            time_ids=torch.randn(2, 6, device=device, dtype=dtype)))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        down, mid = pipe.controlnet(sample, 10, encoder_hidden_states=embeds, controlnet_cond=control,
                                    return_dict=False, **added)
        pipe.unet(sample, 10, encoder_hidden_states=embeds, down_block_additional_residuals=down,
                  mid_block_additional_residual=mid, **added)
    return counter.get_total_flops()


def sdpa_context(name: str):
    """Restrict scaled_dot_product_attention to one backend (default: PyTorch's own choice)."""
    if name == "default":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]
    return sdpa_kernel([backend])


def bench_model(model: str, args, device: torch.device) -> dict:
    from synthrel.generation.sampler import ControlNetSampler

    cuda = device.type == "cuda"
    eager_dtype = torch.float16 if cuda else torch.float32
    dtype = DTYPES[args.dtype] if cuda else torch.float32
    build_start = time.perf_counter()
    pipe, case = build_pipeline(model, args.tiny, device, eager_dtype)
    negative = negatives(case, device, eager_dtype)
    settings = dict(dtype=dtype, compile=args.compile_mode if args.compile and cuda else None,
                    compile_vae=args.compile_vae and args.compile and cuda,
                    compile_dynamic=args.compile_dynamic, cuda_graphs=args.cuda_graphs and cuda,
                    channels_last=args.channels_last and cuda, fuse_qkv=args.fuse_qkv,
                    vae_dtype=DTYPES[args.vae_dtype] if args.vae_dtype != "auto" and cuda else None,
                    cudnn_benchmark=args.cudnn_benchmark and cuda, embed_control_once=args.embed_control_once,
                    compile_options=dict(args.inductor_option))
    sampler = ControlNetSampler.from_pipeline(pipe, negative_prompt_embeds=negative[0],
                                              negative_pooled_prompt_embeds=negative[1], **settings)
    flops = guided_step_flops(pipe, case, device, eager_dtype)
    report = dict(model=model, tiny=args.tiny, size=case["size"], steps=args.steps, guidance=case["guidance"],
                  control_scale=case["control_scale"], eager_dtype=str(eager_dtype).removeprefix("torch."),
                  sampler=sampler.describe(), sdpa=args.sdpa, guided_step_tflop=round(flops / 1e12, 4),
                  ceiling_img_per_s=round(args.peak_tflops * 1e12 / (flops * args.steps), 2),
                  build_s=round(time.perf_counter() - build_start, 1), rows=[])
    print(f"[{model}] built in {report['build_s']} s; {report['guided_step_tflop']} TFLOP per guided step; "
          f"sampler {report['sampler']}", flush=True)
    batches = args.batches or (case["quick_batches"] if args.quick else case["batches"])
    for batch in batches:
        inputs = make_inputs(case, batch, device, eager_dtype)
        row = dict(batch=batch)
        reference = None
        if args.eager:
            row["eager"], reference = measure(functools.partial(eager_images, pipe, case, inputs, negative, args.steps),
                                              args.repeats, device)
        with sdpa_context(args.sdpa):
            row["synthrel"], images = measure(functools.partial(synthrel_images, sampler, case, inputs, args.steps),
                                              args.repeats, device)
        for side in ("eager", "synthrel"):
            if side in row:
                row[side]["img_per_s"] = round(batch / row[side]["s_per_batch"], 3)
        if reference is not None:
            diff = (images.to(torch.int16) - reference.to(torch.int16)).abs()
            row["ratio"] = round(row["synthrel"]["img_per_s"] / row["eager"]["img_per_s"], 2)
            row["max_pixel_diff"] = int(diff.max())
            row["mean_pixel_diff"] = round(float(diff.float().mean()), 3)
            row["eager_pixel_std"] = round(float(reference.float().std()), 1)  # a constant image would hide errors
        report["rows"].append(row)
        print(f"[{model}] batch {batch}: {json.dumps(row)}", flush=True)
        sampler.release_graphs()
    return report


def build_inpaint_pipeline(tiny: bool, device: torch.device, dtype: torch.dtype):
    """StableDiffusionInpaintPipeline of the SD1.5 size (9-channel UNet) with random weights, no text encoder."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel

    case = CASES[("sd15", tiny)]
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**{**case["unet"], "in_channels": 9})
        vae = AutoencoderKL(**case["vae"])
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet,
                                          scheduler=PNDMScheduler(**PNDM), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype), case


def inpaint_inputs(case: dict, batch: int, device, dtype) -> dict:
    """Patches (PIL, as the stage passes them), centred box masks (the stage's 1.5x context), embeddings, seeds."""
    import numpy as np
    from PIL import Image

    from synthrel.jobs import item_seed

    rng = np.random.default_rng(2000 + batch)
    size = case["size"]
    lo, hi = size // 6, size - size // 6  # the box is the middle two thirds of its context patch
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 255
    gen = torch.Generator().manual_seed(3000 + batch)
    return dict(images=[Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(batch)],
                masks=[Image.fromarray(mask)] * batch,
                embeds=torch.randn(batch, 77, case["embed_dim"], generator=gen).to(device, dtype),
                seeds=[item_seed(0, i, "inpaint") for i in range(batch)])


def inpaint_call(pipe, case, inputs, negative, call: str, steps: int):
    """One call as `inpaint_boxes` makes it; uint8 images as the stage rounds them."""
    import numpy as np

    strength, guidance, _ = INPAINT_CALLS[call]
    batch = len(inputs["seeds"])
    out = pipe(prompt_embeds=inputs["embeds"], negative_prompt_embeds=negative.expand(batch, -1, -1),
               image=inputs["images"], mask_image=inputs["masks"], height=case["size"], width=case["size"],
               strength=strength, guidance_scale=guidance, num_inference_steps=steps,
               generator=[torch.Generator().manual_seed(s) for s in inputs["seeds"]], output_type="np").images
    return torch.from_numpy((np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8))


def bench_inpaint(args, device: torch.device) -> dict:
    """Eager inpainting pipeline against the accelerated one, for the stage's inpaint and refine calls."""
    import copy

    from synthrel.ood_objects.inpainting import accelerate_pipeline

    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    build_start = time.perf_counter()
    pipe, case = build_inpaint_pipeline(args.tiny, device, dtype)
    fast = accelerate_pipeline(copy.deepcopy(pipe), compile=args.inpaint_compile if cuda else None,
                               channels_last=cuda)
    negative = negatives(case, device, dtype)[0]
    steps = min(args.inpaint_steps, 3) if args.tiny and args.quick else args.inpaint_steps
    report = dict(model="inpaint", tiny=args.tiny, size=case["size"], steps=steps, dtype=str(dtype),
                  scheduler="PNDMScheduler", compile=args.inpaint_compile if cuda else None, calls=INPAINT_CALLS,
                  build_s=round(time.perf_counter() - build_start, 1), rows=[])
    batches = args.batches or ((1, 2) if args.tiny else (1, 8))
    for batch in batches:
        inputs = inpaint_inputs(case, batch, device, dtype)
        for call in INPAINT_CALLS:
            row = dict(batch=batch, call=call)
            run = functools.partial(inpaint_call, case=case, inputs=inputs, negative=negative, call=call,
                                    steps=steps)
            row["eager"], reference = measure(functools.partial(run, pipe), args.repeats, device)
            row["synthrel"], images = measure(functools.partial(run, fast), args.repeats, device)
            for side in ("eager", "synthrel"):
                row[side]["img_per_s"] = round(batch / row[side]["s_per_batch"], 3)
            diff = (images.to(torch.int16) - reference.to(torch.int16)).abs()
            row.update(ratio=round(row["synthrel"]["img_per_s"] / row["eager"]["img_per_s"], 2),
                       max_pixel_diff=int(diff.max()), mean_pixel_diff=round(float(diff.float().mean()), 3))
            report["rows"].append(row)
            print(f"[inpaint] batch {batch} {call}: {json.dumps(row)}", flush=True)
    return report


def table(reports: list[dict]) -> str:
    from tabulate import tabulate

    lines = []
    for rep in reports:
        for row in rep["rows"]:
            eager, fast = row.get("eager", {}), row["synthrel"]
            lines.append([rep["model"] + (f" {row['call']}" if "call" in row else ""), row["batch"], eager.get("img_per_s"), fast["img_per_s"], row.get("ratio"),
                          eager.get("s_per_batch"), fast["s_per_batch"], fast["warmup_extra_s"],
                          eager.get("peak_gb"), fast.get("peak_gb"), row.get("max_pixel_diff"),
                          row.get("mean_pixel_diff"), rep.get("ceiling_img_per_s")])
    headers = ["model", "batch", "eager img/s", "synthrel img/s", "ratio", "eager s/batch", "synthrel s/batch",
               "synthrel warm-up s", "eager peak GB", "synthrel peak GB", "max px diff", "mean px diff",
               "ceiling img/s"]
    return tabulate(lines, headers=headers)


def inductor_option(text: str) -> tuple[str, object]:
    """KEY=VALUE with a Python literal value (True, 4, "name")."""
    import ast

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"{key}: {value!r} is not a Python literal") from None


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run gen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("sd15", "sdxl", "both", "inpaint"), default="both",
                        help="both = sd15 and sdxl; inpaint = the OOD stage's inpainting and refinement")
    parser.add_argument("--batches", type=lambda s: tuple(int(x) for x in s.split(",")), default=None,
                        help="comma-separated batch sizes (default SD1.5 1,8,16,32; SDXL 1,4,8)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (--tiny --quick caps it at 3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls after the first (default 2, quick 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: two batch sizes, one timed call")
    parser.add_argument("--tiny", action="store_true", help="tiny architectures (runs on CPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16", help="synthrel compute dtype on GPU")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="torch.compile ControlNet+UNet (GPU only)")
    parser.add_argument("--compile-vae", action=argparse.BooleanOptionalAction, default=True,
                        help="with --compile, also compile the sampler's VAE decoder")
    parser.add_argument("--compile-mode", choices=("default", "max-autotune-no-cudagraphs"), default="default")
    parser.add_argument("--compile-dynamic", action=argparse.BooleanOptionalAction, default=True,
                        help="compile the batch dimension as dynamic (fewer recompiles across batch sizes)")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                        help="replay one captured denoising step (GPU only)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--fuse-qkv", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--vae-dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
                        help="synthrel's VAE decode dtype (auto: the pipeline's, fp32 for SDXL's force_upcast)")
    parser.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                        help="cuDNN autotuning inside synthrel's calls (the eager baseline keeps the default)")
    parser.add_argument("--embed-control-once", action=argparse.BooleanOptionalAction, default=True,
                        help="the ControlNet's control embedding once per call instead of at every step")
    parser.add_argument("--inductor-option", action="append", default=[], type=inductor_option,
                        metavar="KEY=VALUE", help="inductor option for ControlNet + UNet over the sampler's "
                        "defaults, e.g. coordinate_descent_tuning=True or conv_1x1_as_mm=False (repeatable)")
    parser.add_argument("--sdpa", choices=("default", "flash", "efficient", "cudnn", "math"), default="default",
                        help="attention backend for synthrel's sampler")
    parser.add_argument("--eager", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the eager diffusers pipeline (baseline + pixel difference)")
    parser.add_argument("--inpaint-steps", type=int, default=50, help="--model inpaint: steps per call")
    parser.add_argument("--inpaint-compile", choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
                        default="reduce-overhead", help="--model inpaint: accelerate_pipeline's compile mode")
    parser.add_argument("--peak-tflops", type=float, default=H100_TFLOPS)
    parser.add_argument("--json", default=None, help="output JSON (default $OUT/gen_bench.json when OUT is set)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    if args.tiny and args.quick:
        args.steps = min(args.steps, 3)
    return args


def main(argv: list[str] | None = None) -> dict:
    from synthrel.runtime import resolve_device, setup_runtime

    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_runtime()
    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # as the baseline (affects the fp32 SDXL VAE decode)
    models = ("sd15", "sdxl") if args.model == "both" else (args.model,)
    reports = []
    for model in models:
        reports.append(bench_inpaint(args, device) if model == "inpaint" else bench_model(model, args, device))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    import diffusers

    result = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  torch=torch.__version__, diffusers=diffusers.__version__, args=vars(args), models=reports)
    print(table(reports), flush=True)
    path = write_result(result, "gen_bench.json", args.json)
    if path:
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
