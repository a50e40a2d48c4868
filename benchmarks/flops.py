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
- caption: one image of the caption stage's BLIP-large beam search (synthrel/conf/stage/caption.yaml: beams,
  max_new_tokens), counted in parts because generate's stopping is data-dependent (no meta tensors): the vision
  encoder once (384 px), then one text-decoder call over the beams at each of the max_new_tokens lengths with the
  KV cache as generate keeps it (the first call also projects the image tokens to the cross-attention keys and
  values, cached for the rest); every caption at full length, the worst case (the throughput benchmark's random
  weights run to it). The sum equals generate's own count (tests/benchmarks/test_flops.py, tiny BLIP).
- Grounded-SAM: one 512x512 zoom, `GroundedSam.detect` (Grounding DINO tiny at the processor's 800 px, the
  throughput benchmark's prompt; on CPU, its forward reads values) + `segment` (SAM ViT-H at 1024, one box).
  Grounding DINO's PyTorch deformable attention samples with grid_sample, which FlopCounterMode does not count.
- RbA: one optimisation step of batch 16 at 512x1024 (`RbAFineTuner.losses` + backward, the throughput
  benchmark's Mask2Former: RbA's released one-decoder-layer head on Swin-B / Swin-L; on CPU, as the loss's
  Hungarian matching runs scipy): batch 1 counted, x 16 (each image has its own matching; the count is linear in
  the batch); and `rba_predict` on one 1024x2048 image (meta). Transformers' default head (3 feature levels,
  6 encoder and 10 decoder layers), which the throughput JSONs without a `head` setting measured, is counted beside it.
  Mask2Former's deformable attention and the loss's point sampling use grid_sample: not counted either.
- FID: one image through the FID Inception-V3 (synthrel/analysis/inception.py) at 299x299.
Not counted: calibrate (a temperature fit on logits: no matmul or convolution, not FLOP-bound); its MFU is blank.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "bench_results" / "flops.json"
#: generate's sampling steps (synthrel/conf/stage/generate.yaml) and the inpaint stage's calls (gen_bench)
GEN_STEPS = 25


#: what `--parts` may name (default: all of them)
PARTS = ("sd15", "sdxl", "inpaint", "caption", "grounded_sam", "rba", "fid", "evaluate")


def count(fn) -> int:
    """FLOPs of `fn()`. Attention runs on the math kernel: FlopCounterMode counts the GPU's fused attention but
    not the CPU kernel (_scaled_dot_product_flash_attention_for_cpu), and the math kernel's two bmm count the same."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
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


def caption_settings() -> dict:
    """The caption stage's beam search (synthrel/conf/stage/caption.yaml)."""
    from omegaconf import OmegaConf

    conf = OmegaConf.load(ROOT / "synthrel" / "conf" / "stage" / "caption.yaml")
    return {"num_beams": int(conf.num_beams), "max_new_tokens": int(conf.max_new_tokens)}


@torch.no_grad()
def blip_parts(model, pixel_values, num_beams: int, max_new_tokens: int) -> tuple[int, int]:
    """(vision FLOPs, decoder FLOPs) of BLIP's beam search on `pixel_values` (one image), every beam to
    max_new_tokens: one decoder call per new token over the beams, with generate's KV cache."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    vision = count(lambda: model.vision_model(pixel_values=pixel_values))
    image = model.vision_model(pixel_values=pixel_values)[0].expand(num_beams, -1, -1)
    config = model.text_decoder.config
    cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
    token = torch.zeros(num_beams, 1, dtype=torch.long, device=pixel_values.device)
    decoder = sum(count(lambda: model.text_decoder(input_ids=token, encoder_hidden_states=image, cache=cache,
                                                   use_cache=True)) for _ in range(max_new_tokens))
    return vision, decoder


def caption() -> dict:
    """TFLOP per image of the caption stage (BLIP-large of real_configs, meta), in parts (blip_parts)."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    from synthrel.tiny.real_configs import BLIP_IMAGE_SIZE, BLIP_LARGE, BLIP_VOCAB

    settings = caption_settings()
    config = BlipConfig(**{**BLIP_LARGE, "text_config": {**BLIP_LARGE["text_config"], "vocab_size": BLIP_VOCAB}})
    with torch.device("meta"):
        model = BlipForConditionalGeneration(config).eval().requires_grad_(False)
        vision, decoder = blip_parts(model, torch.randn(1, 3, BLIP_IMAGE_SIZE, BLIP_IMAGE_SIZE), **settings)
    return {"image": (vision + decoder) / 1e12, "vision": vision / 1e12, "decoder": decoder / 1e12, **settings,
            "how": "vision encoder once + one decoder call over the beams per new token, all max_new_tokens "
                   "(the worst case)"}


def grounded_sam(zoom: int = 512, name: str = "polar bear") -> dict:
    """TFLOP per image of the inpaint stage's Grounded-SAM: detect (Grounding DINO tiny, CPU) + segment (SAM
    ViT-H, meta, one box) on one `zoom` x `zoom` crop, the throughput benchmark's inputs."""
    import numpy as np

    from benchmarks.stage_throughput import real_grounded_sam
    from synthrel.ood_objects.grounded_sam import GroundedSam

    image = [np.zeros((zoom, zoom, 3), np.uint8)]
    box = [[[0.2 * zoom, 0.2 * zoom, 0.8 * zoom, 0.8 * zoom]]]
    dino, dino_processor, sam, sam_processor = real_grounded_sam(sam_device="meta")
    dino, sam = dino.eval(), sam.eval().requires_grad_(False)
    dino_in = dino_processor(images=image, text=[GroundedSam.caption(name)], return_tensors="pt")
    sam_in = sam_processor(images=image, input_boxes=box, return_tensors="pt").to("meta")
    with torch.no_grad():
        detect = count(lambda: dino(**dino_in))
        segment = count(lambda: sam(**sam_in, multimask_output=True))
    return {"image": (detect + segment) / 1e12, "detect": detect / 1e12, "segment": segment / 1e12,
            "zoom": zoom, "dino_input": list(dino_in["pixel_values"].shape[-2:]), "text_tokens":
            int(dino_in["input_ids"].shape[1]), "sam_input": list(sam_in["pixel_values"].shape[-2:])}


def rba_step(model, batch: dict) -> int:
    """FLOPs of one RbA fine-tuning step (`RbAFineTuner.losses` and its backward) of `model` on `batch`."""
    import inspect
    from types import SimpleNamespace

    from synthrel.ood_detection.rba import RbAFineTuner, freeze_except_mlp

    freeze_except_mlp(model)
    model.train()
    defaults = {k: v.default for k, v in inspect.signature(RbAFineTuner.__init__).parameters.items()
                if v.default is not inspect.Parameter.empty}  # RbAFineTuner's, without loading a folder
    tuner = SimpleNamespace(model=model, hparams=SimpleNamespace(**defaults))
    return count(lambda: RbAFineTuner.losses(tuner, batch)["loss"].backward())


@torch.no_grad()
def rba_predict_flops(model, height: int, width: int) -> int:
    import numpy as np

    from synthrel.ood_detection.rba import rba_predict

    device = next(model.parameters()).device
    return count(lambda: rba_predict(model.eval(), np.zeros((1, height, width, 3), np.uint8), device))


def rba_heads(stage: str) -> dict:
    """The Mask2Former configs of `stage` (rba_swin_b | rba_swin_l) by head name: the throughput benchmark's
    (RbA's released head) and, for the throughput JSONs measured before it had one, transformers' default head
    on the same Swin (RBA_DEFAULT_HEAD)."""
    from transformers import Mask2FormerConfig

    from benchmarks.stage_throughput import RBA_DEFAULT_HEAD, RBA_HEADS, mask2former_config

    released = mask2former_config(stage, tiny=False)
    default = Mask2FormerConfig(backbone_config=released.backbone_config, num_labels=released.num_labels,
                                id2label=released.id2label, label2id=released.label2id)
    return {RBA_HEADS[stage]: released, RBA_DEFAULT_HEAD: default}


def rba() -> dict:
    """TFLOP per optimisation step (batch x crop of the throughput benchmark) and per scored image of RbA, for
    each head of rba_heads, with its layer counts."""
    from benchmarks.stage_throughput import RBA_BATCH, RBA_HEADS, RBA_PREDICT, rba_batch
    from synthrel.ood_detection.convert import rba_model_class

    batch, (h, w) = RBA_BATCH
    out = {"batch": batch, "crop": f"{h}x{w}", "predict": "x".join(map(str, RBA_PREDICT)),
           "how": "step: batch 1 on CPU x batch (linear in the batch); predict: meta; by head (the throughput "
                  "JSON's settings.head)"}
    for stage in RBA_HEADS:
        name = stage.removeprefix("rba_")
        out[name] = {}
        for head, config in rba_heads(stage).items():
            torch.manual_seed(0)
            step = rba_step(rba_model_class()(config), rba_batch(1, h, w))
            with torch.device("meta"):  # .to: a few parameters are made with torch.Tensor(), which ignores the default
                model = rba_model_class()(config).to("meta")
            out[name][head] = {"train_step": batch * step / 1e12,
                               "predict_image": rba_predict_flops(model, *RBA_PREDICT) / 1e12,
                               "encoder_layers": config.encoder_layers, "decoder_layers": config.decoder_layers,
                               "feature_levels": getattr(config, "num_feature_levels", 3)}
            print(f"rba {name} {head}: {out[name][head]}", flush=True)
    return out


def fid() -> dict:
    """TFLOP per image of the FID features (synthrel's FID Inception-V3, meta; it resizes to 299 itself)."""
    from synthrel.analysis.inception import INPUT_SIZE, FIDInceptionV3

    with torch.device("meta"), torch.no_grad():
        net = FIDInceptionV3().eval()
        image = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, dtype=torch.uint8)
        return {"image": count(lambda: net(image)) / 1e12, "size": INPUT_SIZE}


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
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="count only these (the others are kept from --out when it exists; `evaluate` is the slow one)")
    args = p.parse_args(argv)
    out = Path(args.out)
    res = json.loads(out.read_text()) if set(args.parts) != set(PARTS) and out.is_file() else {}
    res.update({"written_by": "python -m benchmarks.run flops", "unit": "TFLOP", "counted_with":
                "torch.utils.flop_counter.FlopCounterMode on the real architectures (meta device, CPU where the "
                "forward reads values; benchmarks/flops.py)", "torch": torch.__version__, "generate_steps": GEN_STEPS})
    counters = {"sd15": lambda: diffusion("sd15"), "sdxl": lambda: diffusion("sdxl"), "inpaint": inpainting,
                "caption": caption, "grounded_sam": grounded_sam, "rba": rba, "fid": fid,
                "evaluate": lambda: segmentation(Path(args.zoo), sorted({size for _, _, size in evaluation_grid()}))}
    for part in PARTS:
        if part in args.parts:
            res[part] = counters[part]()
            if part != "evaluate":
                print(f"{part}: {res[part]}", flush=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}", flush=True)
    return res


if __name__ == "__main__":
    main()
