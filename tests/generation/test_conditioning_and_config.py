"""Conditioning encodings, the square crop, tiny builders, single-file ControlNets, and the composed config."""

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as cs_labels

from synthrel.errors import ConfigError
from synthrel.generation.conditioning import (
    crop_resize_label,
    decode_label_id_hint,
    encode_label_ids,
    square_crop_box,
)
from synthrel.jobs import item_rng


def test_label_id_hint_is_the_official_encoding_and_exact_for_all_ids():
    ids = np.arange(34, dtype=np.uint8).reshape(2, 17)
    hint = encode_label_ids(ids, "label_id")
    assert hint.shape == (1, 2, 17) and hint.dtype == np.float32
    np.testing.assert_allclose(hint[0], (ids.astype(np.float64) + 1) / 34, rtol=1e-6)
    np.testing.assert_array_equal(decode_label_id_hint(hint), ids)
    replicated = encode_label_ids(ids, "label_id", channels=3)
    assert replicated.shape == (3, 2, 17) and (replicated == hint).all()


def test_palette_hint_uses_the_cityscapesscripts_colours():
    ids = np.arange(34, dtype=np.uint8)[None]
    hint = encode_label_ids(ids, "palette")
    colour = {lab.id: lab.color for lab in cs_labels if 0 <= lab.id < 34}
    expected = np.array([colour[i] for i in range(34)], dtype=np.float32).T[:, None, :] / 255
    np.testing.assert_allclose(hint, expected)
    with pytest.raises(ConfigError, match="conditioning_channels"):
        encode_label_ids(ids, "palette", channels=1)
    with pytest.raises(ConfigError, match="palette"):
        encode_label_ids(ids, "rgb")


def test_square_crop_has_the_short_side_and_a_uniform_offset():
    boxes = np.array([square_crop_box(1024, 2048, item_rng(0, k, "crop")) for k in range(4000)])
    assert ((boxes[:, 2] - boxes[:, 0]) == 1024).all() and (boxes[:, 1] == 0).all()
    left = boxes[:, 0]
    assert left.min() >= 0 and left.max() <= 1024
    counts, _ = np.histogram(left, bins=4, range=(0, 1025))
    assert counts.min() > 850  # about 1000 per quarter
    assert square_crop_box(64, 64, item_rng(0, 0)) == (0, 0, 64, 64)


def test_label_crop_is_a_nearest_resize():
    label = np.arange(16, dtype=np.uint8).reshape(4, 4).repeat(2, 0).repeat(2, 1)  # 8x8 of 2x2 blocks
    out = crop_resize_label(label, (0, 0, 8, 8), 4)
    np.testing.assert_array_equal(out, np.arange(16).reshape(4, 4))
    wide = np.concatenate([label, label + 16], axis=1)  # 8x16; a crop offset by 4 columns
    np.testing.assert_array_equal(crop_resize_label(wide, (4, 0, 12, 8), 4)[:, :2], np.arange(16).reshape(4, 4)[:, 2:])


def test_tiny_builder_is_idempotent_and_loads_like_a_hub_model(tiny_models):
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from synthrel.tiny.diffusion import build_tiny_sd

    folder = tiny_models["sd15"]
    stamp = (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert build_tiny_sd(folder, "sd15") == folder
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    cfg = pipe.scheduler.config
    assert (cfg.beta_schedule, cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps) == (
        "scaled_linear", 0.00085, 0.012, 1000)
    assert (cfg.steps_offset, cfg.clip_sample, cfg.set_alpha_to_one) == (1, False, False)
    assert pipe.vae_scale_factor == 8 and pipe.tokenizer.model_max_length == 77
    assert len(pipe.tokenizer("a street, in fog").input_ids) < 20
    xl = StableDiffusionXLPipeline.from_pretrained(tiny_models["sdxl"])
    assert xl.unet.config.addition_embed_type == "text_time"
    assert xl.unet.config.cross_attention_dim == (xl.text_encoder.config.hidden_size
                                                  + xl.text_encoder_2.config.hidden_size)


def test_inpaint_kind_has_nine_input_channels(tmp_path):
    import json

    from synthrel.tiny.diffusion import build_tiny_sd

    folder = build_tiny_sd(tmp_path / "inp", "sd15_inpaint")
    assert json.loads((folder / "unet" / "config.json").read_text())["in_channels"] == 9
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionInpaintPipeline"


def test_single_file_controlnet_loads_the_same_weights(tiny_models, tmp_path):
    import safetensors.torch
    import torch
    from diffusers import ControlNetModel

    from synthrel.diffusion_loading import load_controlnet

    reference = ControlNetModel.from_pretrained(tiny_models["controlnet_sd15"])
    single = tmp_path / "controlnet.safetensors"
    safetensors.torch.save_file(reference.state_dict(), single)
    loaded = load_controlnet(str(single), str(tiny_models["sd15"]))
    assert loaded.config.conditioning_channels == 1
    ref_state = reference.state_dict()
    assert all(torch.equal(v, ref_state[k]) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize(
    "backbone, guidance, conditioning, resolution",
    [("sd15", 8.0, 1.0, 512), ("sdxl", 10.0, 0.65, 1024)],
)
def test_generate_stage_config(compose_cfg, backbone, guidance, conditioning, resolution):
    import hydra.utils

    cfg = compose_cfg("+stage=[generate]", f"backbone={backbone}")
    stage = cfg.stages.generate
    assert (stage.guidance_scale, stage.controlnet_conditioning_scale, stage.resolution) == (
        guidance, conditioning, resolution)
    assert (stage.num_inference_steps, stage.scheduler, stage.eta) == (25, "ddim", 0.0)
    job = hydra.utils.instantiate(stage, _convert_="all")
    assert str(job.set_dir("fog")) == cfg.datasets.synthetic.root
    assert job.prompt("<caption>", job.domains[0]) == "<caption>, in fog"
    assert job.num_samples == 512 and job.samples_per_domain == 512


def test_all_domains_config_uses_the_per_domain_count(compose_cfg):
    import hydra.utils

    cfg = compose_cfg("+stage=[generate]", "domain=all_domains")
    job = hydra.utils.instantiate(cfg.stages.generate, _convert_="all")
    assert len(job.domains) == 28 and job.samples_per_domain == 64
    assert {str(job.set_dir(d)) for d in job.domains} == {cfg.datasets.synthetic.root}


def test_stage_receives_plain_dicts(compose_cfg):
    import hydra.utils

    job = hydra.utils.instantiate(compose_cfg("+stage=[generate]").stages.generate, _convert_="all")
    assert type(job.source) is dict and job.source["_target_"].endswith("CityscapesDataset")
