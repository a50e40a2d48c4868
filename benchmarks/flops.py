"""FLOPs per unit of work of the budget's stages, counted on the real architectures (#36 item 1; no GPU).

    python -m benchmarks.run flops            # writes docs/bench_results/flops.json, which the budget reads

How: `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and attention; 2 FLOPs per
multiply-add) over one unit of work, on models built on the `meta` device (no memory, no compute: the counts
are those of the shapes). The diffusion models are the real-size diffusers recipes of synthrel/tiny/real_configs.py
(the counts of one guided SD1.5 step match gen_bench's guided_step_tflop, counted on the GPU); the segmentation
models are paper40's mmseg models through `MMSegSegmenter.logits_and_features` (its resize, windows and head) at
each evaluated input size. Units:
- training: one image, forward of the VAE encoder, the ControlNet and the frozen UNet, backward through both
  (the UNet's activation gradients, the ControlNet's weight gradients); recomputation under gradient
  checkpointing and the text encoders are not counted (model FLOPs, the MFU convention).
- generation: one image, `steps` guided steps (ControlNet + UNet on the CFG pair) and the VAE decode.
- inpainting: one image, the SD1.5-inpainting UNet over int(steps x strength) guided steps, VAE encode + decode.
- evaluation: one image of each (height, width), per zoo model.
Stages not listed (caption, Grounded-SAM, RbA, FID features, calibrate) are not counted: their MFU is blank.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "bench_results" / "flops.json"
#: generate's sampling steps (synthrel/conf/stage/generate.yaml) and the inpaint stage's calls (gen_bench)
GEN_STEPS = 25


def count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _cond(kind: str, batch: int):
    from synthrel.tiny.real_configs import SDXL_UNET

    size = 1024 if kind == "sdxl" else 512
    embed = 2048 if kind == "sdxl" else 768
    args = dict(encoder_hidden_states=torch.randn(batch, 77, embed))
    if kind == "sdxl":
        args["added_cond_kwargs"] = dict(text_embeds=torch.randn(batch, 1280), time_ids=torch.randn(batch, 6))
        assert SDXL_UNET["cross_attention_dim"] == embed
    return size, args


def diffusion(kind: str) -> dict:
    """TFLOP per image of ControlNet training and of generation for `kind` (sd15 | sdxl)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from synthrel.tiny.real_configs import UNETS, VAES

    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNETS[kind]).requires_grad_(False)
        controlnet = ControlNetModel.from_unet(unet)
        vae = AutoencoderKL(**VAES[kind]).requires_grad_(False)
        size, cond = _cond(kind, 1)
        image = torch.randn(1, 3, size, size)
        latent = torch.randn(1, 4, size // 8, size // 8)

        def train_step():
            with torch.no_grad():
                vae.encode(image)
            down, mid = controlnet(latent, 10, controlnet_cond=image, return_dict=False, **cond)
            out = unet(latent, 10, down_block_additional_residuals=down, mid_block_additional_residual=mid,
                       return_dict=False, **cond)[0]
            out.float().square().mean().backward()

        _, pair = _cond(kind, 2)
        latents, control = torch.randn(2, 4, size // 8, size // 8), torch.randn(2, 3, size, size)

        @torch.no_grad()
        def guided_step():
            down, mid = controlnet(latents, 10, controlnet_cond=control, return_dict=False, **pair)
            unet(latents, 10, down_block_additional_residuals=down, mid_block_additional_residual=mid, **pair)

        decode = count(torch.no_grad()(lambda: vae.decode(latent)))
        step = count(guided_step)
        return {"train_image": count(train_step) / 1e12, "guided_step": step / 1e12,
                "generate_image": (GEN_STEPS * step + decode) / 1e12, "size": size}


def inpainting() -> dict:
    """TFLOP per image of the inpaint stage's two calls (SD1.5-inpainting, 512² context, CFG pair)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from benchmarks.gen_bench import INPAINT_CALLS
    from synthrel.tiny.real_configs import UNETS, VAES

    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNETS["sd15_inpaint"])
        vae = AutoencoderKL(**VAES["sd15_inpaint"])
        _, pair = _cond("sd15", 2)
        sample, image, latent = torch.randn(2, 9, 64, 64), torch.randn(1, 3, 512, 512), torch.randn(1, 4, 64, 64)
        with torch.no_grad():
            step = count(lambda: unet(sample, 10, **pair))
            vae_cost = count(lambda: vae.encode(image)) + count(lambda: vae.decode(latent))
    return {call: (int(steps * strength) * step + vae_cost) / 1e12
            for call, (strength, _, steps) in INPAINT_CALLS.items()}


def segmentation(zoo_file: Path, sizes: list[tuple[int, int]]) -> dict:
    """TFLOP per image per zoo model at each (height, width), as `MMSegSegmenter` predicts it (no features)."""
    import numpy as np
    from omegaconf import OmegaConf

    from synthrel.zoo.predictor import MMSegSegmenter
    from synthrel.zoo.registry import zoo_entries

    out = {}
    for key, entry in zoo_entries(OmegaConf.to_container(OmegaConf.load(zoo_file))).items():
        seg = MMSegSegmenter(entry, "meta", "fp32", load_weights=False)  # fp32: autocast has no meta device
        out[key] = {f"{h}x{w}": count(lambda s=seg, h=h, w=w: s.logits_and_features(np.zeros((1, h, w, 3), np.uint8),
                                                                                   None)) / 1e12
                    for h, w in sizes}
        print(f"{key}: " + ", ".join(f"{k} {v:.3f}" for k, v in out[key].items()) + " TFLOP", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.budget import ZOO, evaluation_grid

    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.run flops", description=__doc__.split("\n")[0])
    p.add_argument("--zoo", default=str(ZOO), help="the zoo whose models are counted")
    p.add_argument("--out", default=str(OUT), help="where the JSON goes (the budget reads docs/bench_results)")
    args = p.parse_args(argv)
    sizes = sorted({size for _, _, size in evaluation_grid()})
    res = {"written_by": "python -m benchmarks.run flops", "unit": "TFLOP", "counted_with":
           "torch.utils.flop_counter.FlopCounterMode on meta-device models (benchmarks/flops.py)",
           "torch": torch.__version__, "generate_steps": GEN_STEPS,
           "sd15": diffusion("sd15"), "sdxl": diffusion("sdxl"), "inpaint": inpainting()}
    print({k: res[k] for k in ("sd15", "sdxl", "inpaint")}, flush=True)
    res["evaluate"] = segmentation(Path(args.zoo), sizes)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}", flush=True)
    return res


if __name__ == "__main__":
    main()
