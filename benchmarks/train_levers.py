"""Levers of the ControlNet training step, side by side in one process on one card (#36 item 2).

    python -m benchmarks.run throughput --levers                       # SDXL, batch 8 x 4, the default levers
    python -m benchmarks.run throughput --levers channels_last sdpa_cudnn channels_last+sdpa_cudnn compile
    python -m benchmarks.run throughput --levers --curve-steps 200        # + loss curves: baseline vs the fastest
    python -m benchmarks.run throughput --levers --tiny                # tiny SDXL on CPU (smoke)

Every variant runs the train_controlnet stage's step, `ControlNetModule.diffusion_loss` (frozen base in bf16 as
`precision: bf16-mixed`, the ControlNet fp32 under autocast, AdamW over the ControlNet, no clipping), on the same
real-size architecture (random weights, built on the GPU from the recipes the smoke profile uses), the same
ControlNet initialisation and the same pre-collated micro-batches (every draw seeded by stream position): the only
difference is the named lever. A variant is one lever or several joined by `+`; `baseline` is the stage's SDXL
default (eager, gradient checkpointing on). Levers:

- `no_checkpointing`: gradient checkpointing off (stage option `gradient_checkpointing`); out of memory is a result
- `no_unet_checkpointing`: checkpointing off in the frozen UNet only, on in the ControlNet (stage option
  `gradient_checkpointing: controlnet`; the UNet's decoder would recompute its forward for an input-only
  backward: 1.5x its cost, against 1.33x for the trained ControlNet)
- `split_micro_batch`: each micro-batch as two halves and twice the accumulation (stage options `batch_size` and
  `accumulate_grad_batches`): the same samples and draws per optimizer step, so the same gradient up to float
  summation order (GroupNorm is per sample); it halves the activation memory, so `no_checkpointing` may fit.
  Its per-micro-batch losses are reported as the mean of the two halves
- `channels_last`: UNet, ControlNet and VAE in NHWC (stage option `channels_last`)
- `sdpa_flash`, `sdpa_efficient`, `sdpa_cudnn`, `sdpa_math`: one scaled-dot-product-attention backend only for
  the UNet and the ControlNet (`torch.nn.attention.sdpa_kernel`, forward and backward; the default lets torch
  choose); the VAE encoder keeps the default (see attention())
- `fp8_frozen_unet`: the frozen UNet's transformer Linear layers as torchao Float8Linear (dynamic per-tensor
  scaling; the text-context K/V projections stay bf16: their 77-token rows break fp8 GEMMs' multiple of 16);
  skipped with the reason when torchao does not import or the card has no fp8 tensor cores. Float8Linear is a
  training layer: its backward also computes the frozen weights' gradient, a GEMM the bf16 step skips
- `fp8_frozen_unet_fwd`: the same layers as FrozenFp8Linear (here, `torch._scaled_mm`): forward in e4m3 with one
  dynamic scale for the activations and one for the weights (quantised once), backward only the input gradient,
  in bf16 from the bf16 weights; no torchao needed
- `cudnn_benchmark`: `torch.backends.cudnn.benchmark = True` (cuDNN times its convolution algorithms for each new
  shape and keeps the fastest; the Trainer's `benchmark` flag; both harnesses otherwise leave torch's default, off)
- `compile`, `compile_reduce_overhead`: UNet and ControlNet compiled in place (stage option `compile`), the
  second with mode="reduce-overhead" (CUDA graphs; each micro-batch marks a new CUDA-graph step: without the mark
  the H100 run failed reading graph outputs a later replay had overwritten); minutes of compile each, so only
  when named

Timing: `--warmup-steps` optimizer steps (each `--accumulate` micro-batches of `--batch`), then `--steps` timed
ones, CUDA synchronised; images/s counts the timed micro-batches. The first optimizer step's seconds are reported
apart (the compile time of the compile levers). Peak memory: `torch.cuda.max_memory_allocated` over the variant.
Losses: every micro-batch's, read after the timed loop (no sync in the loop).

`--curve-steps N` adds the numerics check: N optimizer steps (batch `--curve-batch`, accumulate 1) of the baseline,
of the baseline again (the noise floor: non-deterministic kernels) and of each `--curve-levers` variant; prints
the max abs / rel loss difference per step against the baseline and the relative L2 difference of the ControlNet
weight updates.

One JSON, `train_levers_<kind>_<card>.json`, in --out or $OUT.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import write_result

FP8 = ("fp8_frozen_unet", "fp8_frozen_unet_fwd")
LEVERS = ("no_checkpointing", "no_unet_checkpointing", "split_micro_batch", "channels_last", "vae_fp32", "sdpa_flash",
          "sdpa_efficient", "sdpa_cudnn", "sdpa_math", *FP8, "compile", "compile_reduce_overhead", "eager_vae",
          "cudnn_benchmark")
DEFAULT_VARIANTS = ("baseline", "no_checkpointing", "channels_last", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn",
                    *FP8)
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448
SDPA = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION",
        "sdpa_math": "MATH"}
PRECISION = "bf16-mixed"


class Skipped(Exception):
    """A lever that cannot run here (library or card missing): a result, not a failure."""


def parse_variant(name: str) -> frozenset[str]:
    levers = frozenset() if name == "baseline" else frozenset(name.split("+"))
    unknown = sorted(levers - set(LEVERS))
    if unknown:
        raise SystemExit(f"--levers: unknown lever {unknown[0]!r} in {name!r}; levers: baseline, {', '.join(LEVERS)}")
    if len(levers & set(SDPA)) > 1 or {"compile", "compile_reduce_overhead"} <= levers or set(FP8) <= levers:
        raise SystemExit(f"--levers: {name!r} names two attention backends, compile modes or fp8 kinds")
    if "eager_vae" in levers and "compile" not in levers:
        raise SystemExit(f"--levers: {name!r}: eager_vae undoes the VAE part of compile; name it with compile")
    return levers


def variant_order(names: list[str]) -> list[str]:
    """Variants that change the UNet for good last (fp8 swaps modules, compile caches graphs); baseline first."""
    def rank(name):
        levers = parse_variant(name)
        return (name != "baseline", bool(levers & set(FP8)), bool(levers & {"compile", "compile_reduce_overhead"}))

    return sorted(dict.fromkeys(names), key=rank)


# ------------------------------------------------------------------------------------------------- the levers
def fp8_linears(unet) -> dict[str, torch.nn.Module]:
    """The UNet's Linear layers that fp8 GEMMs take: inside transformer blocks, but not the text-context K/V
    projections (batch x 77 rows is no multiple of 16)."""
    return {name: m for name, m in unet.named_modules()
            if isinstance(m, torch.nn.Linear) and ".transformer_blocks." in name
            and not name.endswith(("attn2.to_k", "attn2.to_v"))}


def to_fp8(unet, device) -> dict[str, torch.nn.Module]:
    """Swap fp8_linears(unet) for torchao Float8Linear in place; returns the originals, for restore()."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        raise Skipped("fp8 matmuls need a CUDA card of compute capability >= 8.9 (Ada, Hopper)")
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError as e:
        raise Skipped(f"torchao does not import ({e}); carry its wheel to measure this lever") from None
    originals = fp8_linears(unet)
    convert_to_float8_training(unet, module_filter_fn=lambda m, fqn: fqn in originals)
    return originals


def fp8_tensorwise(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 values and the fp32 scale that dequantises them (t ~ values * scale), from t's absolute maximum."""
    scale = t.detach().abs().amax().float().clamp(min=1e-12) / E4M3_MAX
    return (t.detach().float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale


class _FrozenFp8Matmul(torch.autograd.Function):
    """y = x W^T + b with x and W in e4m3 (one scale each) on fp8 tensor cores; the backward gives x its gradient
    from the bf16 W (one GEMM) and W none: the weights are frozen."""

    @staticmethod
    def forward(ctx, x, w8, w_scale, weight, bias):
        ctx.save_for_backward(weight)
        rows = x.reshape(-1, x.shape[-1])
        x8, x_scale = fp8_tensorwise(rows)
        y = torch._scaled_mm(x8, w8.t(), scale_a=x_scale, scale_b=w_scale, bias=bias, out_dtype=x.dtype)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return (grad.to(weight.dtype) @ weight).to(grad.dtype), None, None, None, None


class FrozenFp8Linear(torch.nn.Module):
    """A frozen Linear whose forward runs in fp8 (weight quantised once); see _FrozenFp8Matmul."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear
        self.w8, self.w_scale = fp8_tensorwise(linear.weight)

    def forward(self, x):
        if torch.is_autocast_enabled(x.device.type):  # as F.linear under autocast: inputs in the autocast dtype
            x = x.to(torch.get_autocast_dtype(x.device.type))
        x = x.to(self.linear.weight.dtype)
        return _FrozenFp8Matmul.apply(x, self.w8, self.w_scale, self.linear.weight, self.linear.bias)


def to_fp8_forward(unet, device) -> dict[str, torch.nn.Module]:
    """Swap fp8_linears(unet) for FrozenFp8Linear in place; returns the originals, for restore()."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        raise Skipped("fp8 matmuls need a CUDA card of compute capability >= 8.9 (Ada, Hopper)")
    originals = fp8_linears(unet)
    restore(unet, {name: FrozenFp8Linear(m) for name, m in originals.items()})
    return originals


def restore(root, originals: dict[str, torch.nn.Module]) -> None:
    for name, module in originals.items():
        parent, _, leaf = name.rpartition(".")
        setattr(root.get_submodule(parent) if parent else root, leaf, module)


@contextlib.contextmanager
def attention(levers: frozenset[str], vae):
    """One SDPA backend for the UNet and the ControlNet; the VAE keeps every backend (its single-head attention
    over 512 channels is beyond flash's and cuDNN's head-dim limit of 256, and math would hold a 16k x 16k
    matrix per image)."""
    backend = next((SDPA[k] for k in levers if k in SDPA), None)
    if backend is None:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    encode = vae.encode

    def encode_any_backend(*args, **kwargs):
        with sdpa_kernel([getattr(SDPBackend, name) for name in SDPA.values()]):
            return encode(*args, **kwargs)

    vae.encode = encode_any_backend
    try:
        with sdpa_kernel([getattr(SDPBackend, backend)]):
            yield
    finally:
        del vae.encode  # the instance attribute: the class's method again


def checkpointing(levers: frozenset[str]) -> bool | str:
    """The stage's `gradient_checkpointing` value of a variant."""
    return False if "no_checkpointing" in levers else "controlnet" if "no_unet_checkpointing" in levers else True


def halves(collated: dict) -> list[dict]:
    """A collated micro-batch as its first and second half (tensors and lists sliced alike)."""
    n = len(collated["position"])
    return [{k: v[a:b] for k, v in collated.items()} for a, b in ((0, n // 2), (n // 2, n))]


# ------------------------------------------------------------------------------------------------- one variant
class Bench:
    """The frozen base, the data and the ControlNet's initial weights, shared by every variant."""

    def __init__(self, args, device, work: Path):
        from benchmarks.multigpu import write_captions, write_cityscapes_layout
        from benchmarks.stage_throughput import _base_pipeline
        from synthrel.controlnet.data import ControlNetTrainData, load_captions
        from synthrel.controlnet.module import diffusion_examples
        from synthrel.data.cityscapes import CityscapesDataset
        from synthrel.generation.conditioning import encoding_channels

        self.args, self.device = args, device
        root = work / "cityscapes"
        ids = write_cityscapes_layout(root, "train", 2 * args.batch, args.resolution, seed=0)
        captions = write_captions(work / "captions.jsonl", ids, seed=0)
        self.data = ControlNetTrainData(CityscapesDataset(root, split="train"), load_captions(captions),
                                        args.resolution, "label_id", 0)
        self.channels = encoding_channels("label_id")
        self.base = _base_pipeline(args.kind, args.tiny, work, device)
        self.examples = diffusion_examples(self.data, self.base, 0)  # the stage's examples, draws included
        from diffusers import ControlNetModel

        torch.manual_seed(0)
        with torch.device(device):  # random init of 1.25 B parameters (SDXL) is a minute on the host
            template = ControlNetModel.from_unet(self.base.unet, conditioning_channels=self.channels)
        self.config = template.config
        self.init_state = {k: v.detach().to("cpu", copy=True) for k, v in template.state_dict().items()}
        del template
        self._batches: dict[tuple[int, int], list[dict]] = {}

    def batches(self, count: int, batch: int) -> list[dict]:
        """`count` micro-batches of `batch` draws from stream position 0, collated once on the host."""
        from torch.utils.data import default_collate

        key = (count, batch)
        if key not in self._batches:
            pin = self.device.type == "cuda"  # as the stage's loader: copies that do not wait for the GPU
            collated = [default_collate([self.examples[i * batch + j] for j in range(batch)]) for i in range(count)]
            self._batches = {key: [{k: v.pin_memory() if pin and isinstance(v, torch.Tensor) else v
                                    for k, v in micro.items()} for micro in collated]}
        return self._batches[key]

    def module(self, levers: frozenset[str], batch: int):
        from diffusers import ControlNetModel

        from synthrel.controlnet.module import ControlNetModule, vae_precision_choice

        with torch.device(self.device):
            controlnet = ControlNetModel.from_config(self.config)
        controlnet.load_state_dict(self.init_state)
        self.base.unet.disable_gradient_checkpointing()  # a previous variant may have left it on
        compiled = bool(levers & {"compile", "compile_reduce_overhead"})
        module = ControlNetModule(self.base, self.data, conditioning_channels=self.channels, lr=self.args.lr,
                                  batch_size=batch, seed=0, controlnet=controlnet,
                                  gradient_checkpointing=checkpointing(levers),
                                  vae_fp32=vae_precision_choice(True if "vae_fp32" in levers else None,
                                                                sdxl=self.args.kind == "sdxl", fixed_vae=False,
                                                                precision=self.args.precision)[0],
                                  channels_last="channels_last" in levers,
                                  compile=compiled and "compile_reduce_overhead" not in levers)
        module.prepare(self.args.precision)
        if "eager_vae" in levers:  # the stage's compile without its VAE encoder: what compiling the VAE adds
            module.vae.encoder._compiled_call_impl = None
        if "compile_reduce_overhead" in levers:
            for net in (module.unet, module.controlnet, module.vae.encoder):
                net.compile(mode="reduce-overhead")
        return module.to(self.device)

    def reset(self) -> None:
        """Undo what a variant did to the shared frozen networks: memory format, compiled calls, dynamo caches."""
        for net in (self.base.unet, self.base.vae):
            net.to(memory_format=torch.contiguous_format)
        self.base.unet._compiled_call_impl = self.base.vae.encoder._compiled_call_impl = None
        torch._dynamo.reset()

    def run(self, name: str, micro_batches: list[dict], accumulate: int, warmup_steps: int, batch: int,
            keep: bool = False) -> dict:
        """Train `name` over `micro_batches`; time the steps after `warmup_steps`. Returns the measurements (and
        with `keep` the final ControlNet weights on the host, fp32)."""
        levers = parse_variant(name)
        fp8 = {}
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        retries = torch.cuda.memory_stats(self.device).get("num_alloc_retries", 0) if cuda else None
        module = optimizer = None
        cudnn_benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = "cudnn_benchmark" in levers or cudnn_benchmark
        try:
            if "split_micro_batch" in levers:
                if batch % 2:
                    raise Skipped(f"split_micro_batch needs an even micro-batch, not {batch}")
                micro_batches = [half for m in micro_batches for half in halves(m)]
                accumulate, batch = 2 * accumulate, batch // 2
            module = self.module(levers, batch)
            if "fp8_frozen_unet" in levers:
                fp8 = to_fp8(module.unet, self.device)
            if "fp8_frozen_unet_fwd" in levers:
                fp8 = to_fp8_forward(module.unet, self.device)
            module.train()
            optimizer = module.configure_optimizers()
            losses, marks = [], []
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.args.precision == PRECISION)
            graphs = "compile_reduce_overhead" in levers
            with attention(levers, module.vae):
                start = time.perf_counter()
                for i, micro in enumerate(micro_batches):
                    if graphs:  # a new iteration for CUDA-graph trees: the previous one's graph outputs are dead
                        torch.compiler.cudagraph_mark_step_begin()
                    with autocast:
                        loss = module.diffusion_loss(micro)
                    (loss / accumulate).backward()
                    losses.append(loss.detach())
                    if (i + 1) % accumulate == 0:
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                        if cuda:
                            torch.cuda.synchronize(self.device)
                        marks.append(time.perf_counter())
            timed = marks[-1] - marks[warmup_steps - 1]
            images = (len(marks) - warmup_steps) * accumulate * batch
            losses = torch.stack(losses).float()
            if "split_micro_batch" in levers:  # equal halves: their mean is the whole micro-batch's loss
                losses = losses.view(-1, 2).mean(1)
            result = {"images_per_s": images / timed, "timed_s": timed, "first_step_s": marks[0] - start,
                      "losses": [float(v) for v in losses.cpu()],
                      "peak_gib": round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2) if cuda else None,
                      # cudaMalloc retries after the allocator freed its cache (each synchronises): memory pressure
                      "allocator_retries": torch.cuda.memory_stats(self.device).get("num_alloc_retries", 0) - retries
                      if cuda else None}
            result["final_state"] = {k: v.detach().to("cpu", torch.float32)
                                     for k, v in module.controlnet.state_dict().items()} if keep else None
        except Skipped as e:
            result = {"skipped": str(e)}
        except torch.OutOfMemoryError:
            result = {"error": "out of memory", "peak_gib": None}
        except Exception as e:  # noqa: BLE001 - one lever failing (kernel missing) must not lose the others
            result = {"error": f"{type(e).__name__}: {e}"[:500]}
        finally:
            torch.backends.cudnn.benchmark = cudnn_benchmark
            restore(self.base.unet, fp8)
            del module, optimizer
            gc.collect()
            self.reset()
            if cuda:
                torch.cuda.empty_cache()
        return result


# ------------------------------------------------------------------------------------------------- sweep, curve
def update_difference(init: dict, base: dict, other: dict) -> float:
    """||(other - init) - (base - init)|| / ||base - init|| over all ControlNet weights (float64 sums)."""
    num = den = 0.0
    for k, v0 in init.items():
        d = base[k] - v0.float()
        num += float(((other[k] - base[k]).double() ** 2).sum())
        den += float((d.double() ** 2).sum())
    return math.sqrt(num / den) if den else float("nan")


def loss_difference(base: list[float], other: list[float]) -> dict:
    abs_diff = [abs(a - b) for a, b in zip(base, other, strict=True)]
    rel = [d / abs(a) for d, a in zip(abs_diff, base, strict=True) if a]
    return {"max_abs": max(abs_diff), "max_rel": max(rel) if rel else None, "mean_abs": sum(abs_diff) / len(abs_diff)}


def sweep(bench: Bench, args, save=lambda variants: None) -> dict:
    steps = args.warmup_steps + args.steps
    micro = bench.batches(steps * args.accumulate, args.batch)
    out = {}
    for name in variant_order(args.levers):
        res = bench.run(name, micro, args.accumulate, args.warmup_steps, args.batch)
        res.pop("final_state", None)
        out[name] = res
        save(out)
        print(f"{name}: " + (res.get("skipped") or res.get("error") or
                             f"{res['images_per_s']:.3f} img/s, peak {res['peak_gib']} GiB, first step "
                             f"{res['first_step_s']:.1f} s, losses {[round(v, 5) for v in res['losses']]}"), flush=True)
    base = out.get("baseline", {})
    for res in out.values():
        if "images_per_s" in res and "images_per_s" in base:
            res["ratio"] = res["images_per_s"] / base["images_per_s"]
            res["loss_vs_baseline"] = loss_difference(base["losses"], res["losses"])
    return out


def fastest(variants: dict) -> str | None:
    """The sweep's fastest variant other than the baseline (None if none ran)."""
    ran = {k: v["images_per_s"] for k, v in variants.items() if k != "baseline" and "images_per_s" in v}
    return max(ran, key=ran.get) if ran else None


def curve_settings(args) -> dict:
    """What a stored curve run must share with this command to be compared with its runs."""
    return {k: getattr(args, k) for k in ("kind", "resolution", "precision", "lr", "curve_steps", "curve_batch")}


def stored_run(store: Path | None, label: str, settings: dict) -> tuple[dict, dict] | None:
    """A curve run that an earlier command saved in --curve-store: (its result, its final ControlNet weights)."""
    path = store / f"{label}.pt" if store else None
    if path is None or not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["settings"] != settings:
        raise SystemExit(f"--curve-store: {path} was trained with {saved['settings']}, not this command's "
                         f"{settings}; use another folder")
    return {**saved["result"], "from_store": str(path)}, saved["state"]


def curve(bench: Bench, args, variants: dict, save=lambda runs: None) -> dict:
    """N optimizer steps of the baseline, the baseline again and each --curve-levers variant (`best`: the sweep's
    fastest): loss per step. With --curve-store, each run is saved there and a run found there is not trained
    again; with --curve-only, only the labels named train: so the runs may be split over commands."""
    batches = bench.batches(args.curve_steps, args.curve_batch)
    names = [fastest(variants) if n == "best" else n for n in args.curve_levers]
    store, settings = (Path(args.curve_store) if args.curve_store else None), curve_settings(args)
    runs, states = {}, {}
    for label, name in [("baseline", "baseline"), ("baseline_again", "baseline"),
                        *[(n, n) for n in dict.fromkeys(names) if n and n != "baseline"]]:
        found = stored_run(store, label, settings)
        if found is not None:
            runs[label], states[label] = found
            continue
        if args.curve_only and label not in args.curve_only:
            runs[label], states[label] = {"skipped": "not in --curve-only and not in --curve-store"}, None
            continue
        runs[label] = bench.run(name, batches, 1, 1, args.curve_batch, keep=True)
        states[label] = runs[label].pop("final_state", None)
        if store is not None and states[label] is not None:
            store.mkdir(parents=True, exist_ok=True)
            torch.save({"settings": settings, "result": runs[label], "state": states[label]}, store / f"{label}.pt")
        save(runs)
    base = runs["baseline"]
    for label, res in runs.items():
        if label == "baseline":
            continue
        if "losses" not in res or "losses" not in base or states[label] is None or states["baseline"] is None:
            print(f"curve {label}: {res.get('skipped') or res.get('error') or 'baseline failed'}", flush=True)
            continue
        d = res["loss_vs_baseline"] = loss_difference(base["losses"], res["losses"])
        w = res["weight_update_rel_l2_vs_baseline"] = update_difference(bench.init_state, states["baseline"],
                                                                        states[label])
        print(f"curve {label} over {args.curve_steps} steps (batch {args.curve_batch}): loss max abs diff "
              f"{d['max_abs']:.3g}, max rel {d['max_rel']:.3g}, mean abs {d['mean_abs']:.3g}; weight update "
              f"rel L2 {w:.3g}", flush=True)
    save(runs)
    return runs


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run throughput --levers",
                                description=__doc__.split("\n")[0])
    p.add_argument("--levers", nargs="*", default=None,
                   help=f"variants (lever or lever+lever; default: {' '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--kind", default="sdxl", choices=["sdxl", "sd15"])
    p.add_argument("--batch", type=int, default=8, help="micro-batch (the paper's 8)")
    p.add_argument("--accumulate", type=int, default=4, help="micro-batches per optimizer step (SDXL paper: 4)")
    p.add_argument("--warmup-steps", type=int, default=1, help="untimed optimizer steps first")
    p.add_argument("--steps", type=int, default=2, help="timed optimizer steps")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--precision", default=PRECISION, choices=[PRECISION, "32"])
    p.add_argument("--curve-steps", type=int, default=0, help="optimizer steps of the loss-curve check (0: none)")
    p.add_argument("--curve-batch", type=int, default=2, help="batch of the loss-curve check (accumulate 1)")
    p.add_argument("--curve-levers", nargs="*", default=["best"],
                   help="variants of the loss-curve check (best: the sweep's fastest)")
    p.add_argument("--curve-store", default=None,
                   help="folder that keeps each curve run (losses, final weights) and gives back those found there")
    p.add_argument("--curve-only", nargs="+", default=None,
                   help="curve labels to train now (baseline, baseline_again, a variant); the others come from "
                        "--curve-store or are skipped. No sweep runs: split a curve over commands")
    p.add_argument("--tiny", action="store_true", help="tiny architecture on CPU at 32 px, batch 2 (smoke)")
    p.add_argument("--device", default=None, help="default: cuda if available (cpu with --tiny)")
    p.add_argument("--out", default=None, help="folder for the JSON (default $OUT)")
    args = p.parse_args(argv)
    args.levers = list(args.levers or DEFAULT_VARIANTS)
    if "baseline" not in args.levers:
        args.levers.insert(0, "baseline")
    for name in [*args.levers, *args.curve_levers]:
        if name != "best":
            parse_variant(name)
    if args.curve_only and (not args.curve_steps or "best" in args.curve_levers):
        p.error("--curve-only needs --curve-steps and --curve-levers naming variants (no sweep runs to find `best`)")
    if args.tiny:
        args.batch, args.accumulate, args.precision = min(args.batch, 2), min(args.accumulate, 2), "32"
    args.resolution = 32 if args.tiny else {"sd15": 512, "sdxl": 1024}[args.kind]
    args.device = args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    for name in ("batch", "accumulate", "warmup_steps", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    from diffusers.utils import logging as diffusers_logging

    from benchmarks.stage_throughput import card_slug

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    diffusers_logging.set_verbosity_error()  # not the cast warnings of every variant
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    start = time.perf_counter()
    res = {"benchmark": "train_levers", "kind": args.kind, "device": card, "card": card_slug(card),
           "torch": torch.__version__, "tiny": args.tiny,
           "command": " ".join(["python -m benchmarks.run throughput", *argv]),
           "settings": {"resolution": args.resolution, "batch": args.batch, "accumulate": args.accumulate,
                        "warmup_steps": args.warmup_steps, "timed_steps": args.steps, "precision": args.precision,
                        "lr": args.lr, "optimizer": "AdamW over the ControlNet",
                        "data": "pre-collated on the host, pinned",
                        "curve_steps": args.curve_steps, "curve_batch": args.curve_batch},
           "variants": {}, "curve": None}
    name = f"train_levers_{args.kind}_{card_slug(card)}.json"

    def save(**parts):  # after the sweep and after every curve run: a killed run keeps what it measured
        res.update(parts, wall_s=round(time.perf_counter() - start, 1))
        write_result(res, name, Path(args.out) / name if args.out else None)

    with tempfile.TemporaryDirectory(prefix="train_levers_") as tmp:
        bench = Bench(args, device, Path(tmp))
        res["build_s"] = round(time.perf_counter() - start, 1)
        print(f"{args.kind} at {args.resolution} px on {card}: base and data built in {res['build_s']:.0f} s",
              flush=True)
        variants = {} if args.curve_only else sweep(bench, args, save=lambda variants: save(variants=variants))
        save(variants=variants)
        if variants:
            print(table(variants), flush=True)
        if args.curve_steps:
            curve(bench, args, variants, save=lambda runs: save(curve=runs))
    return res


def table(variants: dict) -> str:
    lines = [f"{'variant':36} {'img/s':>8} {'x baseline':>10} {'peak GiB':>9} {'first step s':>12} "
             f"{'loss max abs diff':>17}"]
    for name, r in variants.items():
        if "images_per_s" not in r:
            lines.append(f"{name:36} {r.get('skipped') or r.get('error')}")
            continue
        diff = r.get("loss_vs_baseline", {}).get("max_abs")
        lines.append(f"{name:36} {r['images_per_s']:8.3f} {r.get('ratio', float('nan')):10.3f} "
                     f"{r['peak_gib'] if r['peak_gib'] is not None else '-':>9} {r['first_step_s']:12.1f} "
                     f"{'-' if diff is None else f'{diff:.3g}':>17}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
