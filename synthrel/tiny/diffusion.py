"""Tiny randomly initialised Stable Diffusion pipelines of the real architectures, saved as diffusers folders.

They let every stage run offline through the same `from_pretrained(folder)` code as
`stable-diffusion-v1-5/stable-diffusion-v1-5` or `stabilityai/stable-diffusion-xl-base-1.0`: same component classes,
same folder layout, same scheduler config; only the widths and depths are small. The VAE keeps four blocks so
the latent is 8x smaller than the image, as in the real models (ControlNet's conditioning encoder assumes 8x).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Literal, get_args

from synthrel.jobs import atomic_dir

log = logging.getLogger(__name__)

Kind = Literal["sd15", "sdxl", "sd15_inpaint"]
KINDS = get_args(Kind)

#: The DDIM settings of the SD1.5 / SDXL scheduler configs (scaled-linear betas, 1000 training steps).
SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)

#: Words the tiny CLIP tokenizer knows as whole tokens (so tiny prompts stay short, like real ones).
#: The tiny BLIP vocabulary uses the same words, so its (random) captions tokenize to one token per word.
TINY_WORDS = (
    "a an the of in on at with and to down street road city car cars bus truck train person people man woman "
    "riding bicycle motorcycle driving parked building buildings tree trees sky sidewalk traffic light sign "
    "pole fence wall vegetation terrain there is are view picture photo black white red blue green "
    "fog night rain snow india beijing cairo clouds dubai fall hurricane istanbul johannesburg lightning "
    "london moscow mumbai paris sandstorm spring summer sun sydney tokyo tornado toronto wind winter"
).split()

COMPLETE_MARKER = "model_index.json"


def build_tiny_sd(out_dir: str | Path, kind: str, seed: int = 0, size: str = "tiny", device=None) -> Path:
    """Build the `kind` pipeline into `out_dir` (skipped when already complete); return the folder.

    size: tiny, or real (the hub model's widths, synthrel/tiny/real_configs.py; random init on `device`, since
    3.5 B parameters (SDXL) take minutes to initialise on a host). The folder is written to a temporary sibling
    and renamed into place, so a kill never leaves a half-written folder that a later run would take as complete.
    """
    if kind not in KINDS:
        from synthrel.errors import unknown_name

        raise unknown_name("tiny diffusion model", kind, KINDS)
    out_dir = Path(out_dir)
    if (out_dir / COMPLETE_MARKER).is_file():
        return out_dir
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory() as scratch:
        pipe = _build_pipeline(kind, seed, Path(scratch) / "tokenizer_src", size, device)
        pipe.save_pretrained(tmp, safe_serialization=True)
    log.info("built %s %s pipeline in %s", size, kind, out_dir)
    return out_dir


def write_clip_tokenizer_files(directory: Path) -> Path:
    """Write a byte-level BPE vocab.json + merges.txt in the CLIP format (whole-word merges for TINY_WORDS).

    transformers 5 ignores `CLIPTokenizer(vocab_file=..., merges_file=...)` (feasibility pitfall 7), so the
    files are written and loaded with `from_pretrained(directory)`.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab_tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    for word in TINY_WORDS:
        if len(word) < 2:
            continue
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            pair = (current, piece)
            current = current + piece
            if pair not in merges:
                merges.append(pair)
                vocab_tokens.append(current)
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {}
    for token in vocab_tokens:
        vocab.setdefault(token, len(vocab))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    return directory


def _clip_tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    write_clip_tokenizer_files(directory)
    return CLIPTokenizer.from_pretrained(directory, model_max_length=77, pad_token="<|endoftext|>")


def _text_config(vocab_size: int, projection_dim: int | None = None, real: dict | None = None):
    """A tiny CLIP text config, or the `real` tower's (CLIP's 49,408-row embedding; the local tokenizer's ids)."""
    from transformers import CLIPTextConfig

    if real is not None:
        from synthrel.tiny.real_configs import CLIP_VOCAB

        return CLIPTextConfig(**real, vocab_size=max(CLIP_VOCAB, vocab_size), bos_token_id=vocab_size - 2,
                              eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection_dim or 32,
        hidden_act="gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def _vae(kind: str, size: str):
    from diffusers import AutoencoderKL

    if size == "real":
        from synthrel.tiny.real_configs import VAES

        return AutoencoderKL(**VAES[kind])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.18215,
    )


def _unet(kind: str, size: str):
    from diffusers import UNet2DConditionModel

    if size == "real":
        from synthrel.tiny.real_configs import UNETS

        return UNet2DConditionModel(**UNETS[kind])
    common = dict(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        out_channels=4,
        norm_num_groups=32,
    )
    if kind == "sdxl":
        return UNet2DConditionModel(
            **common,
            in_channels=4,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80,  # text_encoder_2 projection (32) + 6 time ids * 8
            cross_attention_dim=64,  # the two text encoders' hidden states concatenated (32 + 32)
        )
    return UNet2DConditionModel(
        **common,
        in_channels=9 if kind == "sd15_inpaint" else 4,
        attention_head_dim=8,
        cross_attention_dim=32,
    )


def _build_pipeline(kind: str, seed: int, tokenizer_dir: Path, size: str = "tiny", device=None):
    import torch
    from diffusers import (
        DDIMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from synthrel.tiny.real_configs import CLIP_G_TEXT, CLIP_L_TEXT, check_size

    real = check_size(size) == "real"
    torch.manual_seed(seed)
    tokenizer = _clip_tokenizer(tokenizer_dir)
    vocab_size = len(tokenizer)
    with torch.device(device or "cpu"):
        unet = _unet(kind, size)
        vae = _vae(kind, size)
        text_encoder = CLIPTextModel(_text_config(vocab_size, real=CLIP_L_TEXT if real else None))
        text_encoder_2 = (CLIPTextModelWithProjection(_text_config(vocab_size, 32, CLIP_G_TEXT if real else None))
                          if kind == "sdxl" else None)
    scheduler = DDIMScheduler(**SD_SCHEDULER)
    if kind == "sdxl":
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
        )
    pipeline_class = StableDiffusionInpaintPipeline if kind == "sd15_inpaint" else StableDiffusionPipeline
    return pipeline_class(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def open_control_path(controlnet, generator=None, zero_conv_std: float = 0.05):
    """Make the control image change the outputs of an untrained ControlNet (random weights stand in for
    trained ones in tests and benchmarks).

    A fresh ControlNet ignores its control image: the zero convolutions output zeros, and through the eight
    default-initialised convolutions of the conditioning embedding the image moves the output by under 2 % of
    its spread (the biases dominate). This draws the zero convolutions from N(0, zero_conv_std²) and gives the embedding
    He-scaled weights and zero biases. `generator`: a CPU torch.Generator (default: the global RNG).
    """
    import torch

    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if name.startswith("controlnet_cond_embedding."):
                scale = (2 / param[0].numel()) ** 0.5 if name.endswith("weight") else 0.0
            elif name.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                scale = zero_conv_std
            else:
                continue
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return controlnet
