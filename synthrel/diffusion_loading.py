"""Loading Stable Diffusion bases and ControlNets (real hub weights, local folders, or the tiny models).

One code path for every source: `backbone.pretrained` is a hub id (read from the local Hugging Face cache
when offline) or a local diffusers pipeline folder (model_index.json + component subfolders), which is also
how the tiny profile's models are stored (written by the tiny_models stage under `profile.models_dir`). Used by
generation, ControlNet training and inpainting.

ControlNet sources (`backbone.controlnet`):
- a diffusers folder (config.json + diffusion_pytorch_model.safetensors), as written by `save_pretrained`
  (our training stage) or downloaded from the hub;
- a single original-format file (.ckpt / .safetensors / .pth / .bin), e.g. the paper's `controlnet_cs.ckpt`
  (a ControlLDM Lightning checkpoint whose `control_model.*` keys hold the ControlNet) or a stand-alone
  ControlNet file; it is converted with diffusers' `ControlNetModel.from_single_file`, with the
  architecture taken from the base UNet's config and the number of hint channels read from the weights.
  SD1.5-style checkpoints are supported; SDXL single files go through the same code but were not tested.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Literal

from synthrel.errors import WeightsError

log = logging.getLogger(__name__)

#: diffusion precision on CUDA (`backbone.dtype`, `stages.inpaint.dtype`; the CPU runs fp32)
Dtype = Literal["fp16", "bf16", "fp32"]
SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pth", ".pt", ".bin")
SDXL_PIPELINES = ("StableDiffusionXLPipeline", "StableDiffusionXLControlNetPipeline", "StableDiffusionXLImg2ImgPipeline")


def generation_dtype(dtype: str, device) -> torch.dtype:  # noqa: F821
    """fp32 on CPU (half precision is slow or unsupported there); `dtype` (fp16/bf16/fp32) on CUDA."""
    import torch

    if str(device).startswith("cpu"):
        return torch.float32
    table = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if dtype not in table:
        from synthrel.errors import unknown_name

        raise unknown_name("dtype", dtype, table, "backbone.dtype")
    return table[dtype]


def looks_local(source: str) -> bool:
    """A hub id is `name` or `org/name`; anything else (absolute, ./, ~, deeper paths) is a local path."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or Path(source).exists()


def _missing(what: str, source: str, key: str, hint: str, cause: Exception | None = None) -> WeightsError:
    reason = f" ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})" if cause else ""
    return WeightsError(f"{what} {source!r} could not be loaded{reason}. {hint} Set `{key}` accordingly.")


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HFValidationError

    return (OSError, ValueError, HFValidationError)


def pipeline_class_name(pretrained: str, key: str = "backbone.pretrained") -> str:
    """The `_class_name` of the pipeline at `pretrained` (from its model_index.json), failing fast if absent."""
    from diffusers import DiffusionPipeline

    source = str(pretrained)
    if looks_local(source):
        folder = Path(source).expanduser()
        if not (folder / "model_index.json").is_file():
            state = "is not a diffusers pipeline folder (no model_index.json)" if folder.exists() else "does not exist"
            raise WeightsError(
                f"Stable Diffusion weights folder {source!r} {state}. Download the base model in diffusers "
                f"format (e.g. `hf download stable-diffusion-v1-5/stable-diffusion-v1-5`, or "
                f"stabilityai/stable-diffusion-xl-base-1.0 for SDXL) and set `{key}` to its folder or hub id; "
                "with profile=tiny it is a folder under `profile.models_dir` that the tiny_models stage writes "
                "(python -m synthrel.run profile=tiny +stage=[tiny_models])."
            )
        return json.loads((folder / "model_index.json").read_text())["_class_name"]
    try:
        return DiffusionPipeline.load_config(source)["_class_name"]
    except _hub_errors() as e:
        raise _missing(
            "Stable Diffusion weights", source, key,
            "It is not in the local Hugging Face cache and could not be downloaded (HF_HUB_OFFLINE?): "
            f"run `hf download {source}` on a machine with internet, or point to a local folder.",
            e,
        ) from None


def is_sdxl(pretrained: str, key: str = "backbone.pretrained") -> bool:
    return pipeline_class_name(pretrained, key) in SDXL_PIPELINES


def load_base_pipeline(pretrained: str, torch_dtype=None, vae: str | None = None, key: str = "backbone.pretrained"):
    """The base text-to-image pipeline (StableDiffusionPipeline or StableDiffusionXLPipeline).

    Its `.components` hold unet, vae, text encoder(s), tokenizer(s) and scheduler. `vae` replaces the VAE
    (e.g. madebyollin/sdxl-vae-fp16-fix, config key `backbone.vae`).
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline

    sdxl = is_sdxl(pretrained, key)
    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    if vae:
        try:
            kwargs["vae"] = AutoencoderKL.from_pretrained(vae, **kwargs)
        except _hub_errors() as e:
            raise _missing("VAE", vae, "backbone.vae", "Download it or set it to null for the base VAE.", e) from None
    if not sdxl:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipeline_class = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    try:
        return pipeline_class.from_pretrained(str(Path(pretrained).expanduser()) if looks_local(pretrained)
                                              else pretrained, **kwargs)
    except _hub_errors() as e:
        raise _missing("Stable Diffusion weights", pretrained, key,
                       "A component is missing or unreadable; re-download the model.", e) from None


def _hint_channels(state_dict: dict) -> int | None:
    for name in ("controlnet_cond_embedding.conv_in.weight", "input_hint_block.0.weight",
                 "control_model.input_hint_block.0.weight"):
        if name in state_dict:
            return int(state_dict[name].shape[1])
    return None


def load_controlnet(source: str, base_pretrained: str, torch_dtype=None, key: str = "backbone.controlnet"):
    """A ControlNetModel from a diffusers folder or an original-format single file (see module docstring)."""
    from diffusers import ControlNetModel

    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    path = Path(str(source)).expanduser()
    hint = ("Train one with the train_controlnet stage (it saves to "
            "${paths.artifacts_dir}/controlnet/<backbone>/final) or download the released checkpoint "
            "(the paper's controlnet_cs.ckpt, see README).")
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        from diffusers.loaders.single_file_utils import load_single_file_checkpoint

        try:
            checkpoint = load_single_file_checkpoint(str(path))
            channels = _hint_channels(checkpoint)
            if channels is None:
                raise WeightsError(f"ControlNet file {str(path)!r} (config key `{key}`) holds no ControlNet hint "
                                   "encoder (neither `input_hint_block` nor `controlnet_cond_embedding` keys)")
            return ControlNetModel.from_single_file(
                checkpoint, config=str(base_pretrained), subfolder="unet", conditioning_channels=channels, **kwargs
            )
        except _hub_errors() + (KeyError, RuntimeError) as e:
            raise _missing("ControlNet checkpoint", str(path), key, hint, e) from None
    if path.is_dir() and (path / "config.json").is_file():
        source = str(path)
    elif looks_local(str(source)):
        raise WeightsError(f"ControlNet weights {str(source)!r} not found (config key `{key}`): expected a diffusers "
                           f"folder with config.json or a {'/'.join(SINGLE_FILE_SUFFIXES)} file. {hint}")
    try:
        return ControlNetModel.from_pretrained(source, **kwargs)
    except _hub_errors() as e:
        raise _missing("ControlNet weights", str(source), key, hint, e) from None


def check_controlnet_matches(controlnet, unet, controlnet_source: str, base_source: str) -> None:
    """A ControlNet trained for another backbone fails later with a shape error; say which two disagree."""
    fields = ("cross_attention_dim", "addition_embed_type", "projection_class_embeddings_input_dim")
    diffs = [f"{f}: ControlNet {controlnet.config.get(f)!r} vs UNet {unet.config.get(f)!r}"
             for f in fields if controlnet.config.get(f) != unet.config.get(f)]
    if diffs:
        raise WeightsError(
            f"ControlNet {controlnet_source!r} (config key `backbone.controlnet`) does not match the base model "
            f"{base_source!r} (config key `backbone.pretrained`): {'; '.join(diffs)}. Use a ControlNet trained "
            "for this backbone (SD1.5 vs SDXL)."
        )


def load_controlnet_pipeline(pretrained: str, controlnet: str, torch_dtype=None, vae: str | None = None):
    """A StableDiffusion(XL)ControlNetPipeline with a DDIM scheduler built from the base's scheduler config."""
    from diffusers import (
        DDIMScheduler,
        StableDiffusionControlNetPipeline,
        StableDiffusionXLControlNetPipeline,
    )

    base = load_base_pipeline(pretrained, torch_dtype=torch_dtype, vae=vae)
    net = load_controlnet(controlnet, pretrained, torch_dtype=torch_dtype)
    check_controlnet_matches(net, base.unet, str(controlnet), str(pretrained))
    components = dict(base.components)
    components["scheduler"] = DDIMScheduler.from_config(base.scheduler.config)
    if "text_encoder_2" in components:
        components.pop("image_encoder", None)
        components.pop("feature_extractor", None)
        return StableDiffusionXLControlNetPipeline(**components, controlnet=net)
    components["requires_safety_checker"] = False
    return StableDiffusionControlNetPipeline(**components, controlnet=net)


def weights_digest(source: str | Path, length: int = 12) -> str:
    """Short sha256 of the weight file(s) of a ControlNet (a file, or every weight file of a folder)."""
    path = Path(source)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix in SINGLE_FILE_SUFFIXES
    )
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:length]
