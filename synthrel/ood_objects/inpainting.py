"""Inpaint a box with its context (S4) and re-noise it (S5), pasting back only the box.

The context patch (the box and a 1.5x margin) is resized to `patch_size`, the box is the inpainting mask, and
after generation only the box is resized back and pasted, so every pixel outside it stays byte-identical.
The official code box-blurred the mask, which diffusers re-binarises (no effect); here it is a hard box.

`accelerate_pipeline` makes the diffusers inpainting pipeline faster on a GPU without changing its sampler
(docs/benchmarks.md, "Inpainting and refinement").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np
from PIL import Image

from synthrel.errors import ConfigError
from synthrel.ood_objects.placement import Box, Placement

#: torch.compile modes for the inpainting UNet ("reduce-overhead" adds CUDA graphs: the batch-1 case is bound
#: by kernel launches).
CompileMode = Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"]
COMPILE_MODES = get_args(CompileMode)


@dataclass(frozen=True)
class DiffusionSettings:
    strength: float
    guidance_scale: float
    num_inference_steps: int


def resize(image: np.ndarray, width: int, height: int, nearest: bool = False) -> np.ndarray:
    """Bicubic (or nearest) resize, as the official code (cv2.INTER_CUBIC for images)."""
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC)


def box_in_patch(placement: Placement, patch_size: int) -> Box:
    """The box in the coordinates of the context patch resized to patch_size x patch_size."""
    box, context = placement.box.relative_to(placement.context), placement.context
    sx, sy = patch_size / context.width, patch_size / context.height
    return Box(round(box.x0 * sx), round(box.y0 * sy), round(box.x1 * sx), round(box.y1 * sy))


def context_patch(image: np.ndarray, placement: Placement, patch_size: int) -> np.ndarray:
    return resize(image[placement.context.slices], patch_size, patch_size)


def patch_mask(placement: Placement, patch_size: int) -> np.ndarray:
    """0/255 mask of the box in the patch: the region that is noised (and regenerated)."""
    mask = np.zeros((patch_size, patch_size), dtype=np.uint8)
    mask[box_in_patch(placement, patch_size).slices] = 255
    return mask


def paste_box(image: np.ndarray, patch: np.ndarray, placement: Placement) -> np.ndarray:
    """A copy of `image` whose box holds the generated patch resized back to the context size."""
    context = placement.context
    back = resize(patch, context.width, context.height)
    out = image.copy()
    out[placement.box.slices] = back[placement.box.relative_to(context).slices]
    return out


def inpaint_boxes(pipe, images: list[np.ndarray], placements: list[Placement], prompts: list[str],
                  seeds: list[int], settings: DiffusionSettings, patch_size: int) -> list[np.ndarray]:
    """One batched inpainting call; each item's noise comes from its own seeded CPU generator."""
    import torch

    patches = [Image.fromarray(context_patch(image, placement, patch_size))
               for image, placement in zip(images, placements, strict=True)]
    masks = [Image.fromarray(patch_mask(pl, patch_size)) for pl in placements]
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    out = pipe(
        prompt=list(prompts), image=patches, mask_image=masks, height=patch_size, width=patch_size,
        strength=settings.strength, guidance_scale=settings.guidance_scale,
        num_inference_steps=settings.num_inference_steps, generator=generators, output_type="np",
    ).images
    generated = (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)
    return [paste_box(im, g, pl) for im, g, pl in zip(images, generated, placements, strict=True)]


def accelerate_pipeline(pipe, *, compile: str | None = None, channels_last: bool = True,
                        backend: str = "inductor"):
    """Speed up a diffusers (inpainting) pipeline in place; its scheduler and call stay the same.

    channels_last puts UNet and VAE weights in NHWC, which cuDNN's tensor-core convolutions take without
    layout transposes; `compile` (one of COMPILE_MODES) compiles the UNet in that mode and the VAE's encoder
    and decoder in the default mode (no CUDA graphs: their outputs are kept across calls). Modules are compiled
    in place (`nn.Module.compile`), so `pipe.unet.config` and the state_dict keys do not change.
    """
    import torch

    if compile not in (None, *COMPILE_MODES):
        raise ConfigError(f"compile must be null or one of {', '.join(COMPILE_MODES)}, got {compile!r}")
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if compile:
        pipe.unet.compile(mode=None if compile == "default" else compile, backend=backend)
        pipe.vae.encoder.compile(backend=backend)
        pipe.vae.decoder.compile(backend=backend)
    return pipe
