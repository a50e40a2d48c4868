"""The paper's ControlNet is released in the original ControlLDM layout (`control_model.input_blocks...`, a
one-channel `input_hint_block`). This writes the tiny ControlNet in that layout, from the naming rules of
lllyasviel/ControlNet's cldm.py (written here independently of diffusers' converter), and loads it back."""

import re

import pytest
import torch
from safetensors.torch import save_file

from synthrel.diffusion_loading import load_controlnet

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
          ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]


def to_ldm(state: dict, layers_per_block: int, n_hint_blocks: int) -> dict:
    """diffusers ControlNetModel keys -> ControlLDM `control_model.*` keys."""
    def resnet(rest):
        for new, old in RESNET:
            rest = rest.replace(new, old)
        return rest

    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            ldm = f"input_blocks.{b * (layers_per_block + 1) + j + 1}.0.{resnet(rest)}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            ldm = f"input_blocks.{b * (layers_per_block + 1) + j + 1}.1.{rest}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            ldm = f"input_blocks.{(int(m[1]) + 1) * (layers_per_block + 1)}.0.op.{m[2]}"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", key):
            ldm = f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            ldm = f"middle_block.1.{m[1]}"
        elif m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
            ldm = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.fullmatch(r"controlnet_mid_block\.(.+)", key):
            ldm = f"middle_block_out.0.{m[1]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", key):
            ldm = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(.+)", key):
            ldm = f"input_hint_block.0.{m[1]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(.+)", key):
            ldm = f"input_hint_block.{2 * (n_hint_blocks + 1)}.{m[1]}"
        elif m := re.fullmatch(r"time_embedding\.linear_(\d)\.(.+)", key):
            ldm = f"time_embed.{2 * (int(m[1]) - 1)}.{m[2]}"
        elif m := re.fullmatch(r"conv_in\.(.+)", key):
            ldm = f"input_blocks.0.0.{m[1]}"
        else:
            raise KeyError(f"no ControlLDM name for {key}")
        out[f"control_model.{ldm}"] = value.contiguous()
    return out


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_original_format_controlnet_loads_with_the_same_weights(tiny_models, tmp_path, suffix):
    from diffusers import ControlNetModel

    reference = ControlNetModel.from_pretrained(tiny_models["controlnet_sd15"])
    torch.manual_seed(0)
    with torch.no_grad():  # distinct values everywhere, so a swapped tensor cannot go unnoticed
        for p in reference.parameters():
            p.normal_()
    state = reference.state_dict()
    ldm = to_ldm(state, reference.config.layers_per_block, len(reference.controlnet_cond_embedding.blocks))
    assert len(ldm) == len(state)
    path = tmp_path / f"controlnet_cs{suffix}"
    if suffix == ".safetensors":
        save_file(ldm, path)
    else:
        torch.save({"state_dict": ldm}, path)  # the Lightning checkpoint the official train.py writes

    loaded = load_controlnet(str(path), str(tiny_models["sd15"]))
    assert loaded.config.conditioning_channels == 1  # the paper's one-channel (labelId+1)/34 hint
    got = loaded.state_dict()
    assert got.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
