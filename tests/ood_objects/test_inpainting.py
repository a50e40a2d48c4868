import numpy as np
import pytest

from synthrel.ood_objects.inpainting import (
    DiffusionSettings,
    box_in_patch,
    inpaint_boxes,
    paste_box,
    patch_mask,
)
from synthrel.ood_objects.placement import Box, Placement, context_box, sample_placement


def outside(mask_box: Box, shape) -> np.ndarray:
    keep = np.ones(shape[:2], dtype=bool)
    keep[mask_box.slices] = False
    return keep


def test_centred_box_is_the_middle_two_thirds_of_the_patch():
    placement = Placement(Box(30, 30, 60, 60), context_box(Box(30, 30, 60, 60), 128, 128))
    assert placement.context == Box(23, 23, 68, 68)  # side 45, margin 7
    box = box_in_patch(placement, 512)
    assert box == Box(80, 80, 421, 421)  # 7/45*512 = 79.6, 37/45*512 = 421.0: a 341-px square as the official
    mask = patch_mask(placement, 512)
    assert mask.sum() == 341 * 341 * 255 and set(np.unique(mask)) == {0, 255}


def test_paste_changes_only_the_box():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    for _ in range(20):
        placement = sample_placement(rng, 64, 128)
        patch = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        out = paste_box(image, patch, placement)
        keep = outside(placement.box, image.shape)
        assert np.array_equal(out[keep], image[keep])
        box = placement.box
        assert out[box.slices].shape == (box.height, box.width, 3)


def test_inpainting_with_the_tiny_pipeline_keeps_pixels_outside_the_box(tiny_models):
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(tiny_models["sd15_inpaint"], safety_checker=None,
                                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(2)]
    placements = [sample_placement(rng, 64, 128) for _ in images]
    settings = DiffusionSettings(strength=1.0, guidance_scale=15.0, num_inference_steps=2)
    outs = inpaint_boxes(pipe, images, placements, ["A photo of a lion"] * 2, [1, 2], settings, 64)
    for image, out, placement in zip(images, outs, placements, strict=True):
        keep = outside(placement.box, image.shape)
        assert np.array_equal(out[keep], image[keep])
        assert not np.array_equal(out[placement.box.slices], image[placement.box.slices])
    # each item's noise comes from its own seed, whatever the batch
    [alone] = inpaint_boxes(pipe, images[1:], placements[1:], ["A photo of a lion"], [2], settings, 64)
    assert np.abs(alone.astype(int) - outs[1].astype(int)).max() <= 1
    [other_seed] = inpaint_boxes(pipe, images[1:], placements[1:], ["A photo of a lion"], [3], settings, 64)
    assert not np.array_equal(other_seed, outs[1])


@pytest.mark.parametrize("patch_size", [64])
def test_refinement_strength_keeps_outside_pixels(tiny_models, patch_size):
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(tiny_models["sd15_inpaint"], safety_checker=None,
                                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    placement = sample_placement(rng, 64, 128)
    settings = DiffusionSettings(0.65, 7.5, 3)
    [out] = inpaint_boxes(pipe, [image], [placement], ["lion"], [0], settings, patch_size)
    keep = outside(placement.box, image.shape)
    assert np.array_equal(out[keep], image[keep])


def test_accelerated_pipeline_gives_the_plain_pipeline_images(tiny_models):
    """channels_last + compiled UNet/VAE (aot_eager on CPU: the same traced graphs inductor would get) keep
    the sampler: same images for the same seeds."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    from synthrel.ood_objects.inpainting import accelerate_pipeline

    def load():
        pipe = StableDiffusionInpaintPipeline.from_pretrained(tiny_models["sd15_inpaint"], safety_checker=None,
                                                              requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(2)]
    placements = [sample_placement(rng, 64, 128) for _ in images]
    args = (images, placements, ["A photo of a lion"] * 2, [5, 6])
    fast = accelerate_pipeline(load(), compile="default", backend="aot_eager")
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    for settings in (DiffusionSettings(1.0, 15.0, 2), DiffusionSettings(0.65, 7.5, 3)):
        plain_out = inpaint_boxes(load(), *args, settings, 64)
        fast_out = inpaint_boxes(fast, *args, settings, 64)
        for a, b in zip(plain_out, fast_out, strict=True):
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    with pytest.raises(Exception, match="compile must be null or one of"):
        accelerate_pipeline(load(), compile="fastest")
