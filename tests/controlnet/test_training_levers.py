"""The training-step levers that are options of the train_controlnet stage (#36: gradient_checkpointing,
channels_last) train the same ControlNet as the plain step: same losses step by step, same weights, on tiny
SDXL models on the CPU in fp32. benchmarks/train_levers.py measures their speed and the 200-step curves on a GPU."""

import pytest
import torch
from diffusers import ControlNetModel
from test_training import make_job, make_module
from torch.utils.data import default_collate

STEPS, BATCH = 3, 2


def train(models, data, **levers) -> tuple[list[float], dict[str, torch.Tensor]]:
    """STEPS AdamW steps over draws 0..STEPS*BATCH-1 as the stage's fp32 step; the losses and final weights."""
    module, train_data = make_module(models, data, kind="sdxl", lr=1e-4, **levers)
    module.prepare("32")
    optimizer = module.configure_optimizers()
    losses = []
    for step in range(STEPS):
        loss = module.diffusion_loss(default_collate([train_data[step * BATCH + j] for j in range(BATCH)]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in module.controlnet.state_dict().items()}


def update_gap(init, base, other) -> float:
    """||update(other) - update(base)|| / ||update(base)|| in float64, over every ControlNet weight."""
    num = sum(float(((other[k].double() - base[k].double()) ** 2).sum()) for k in init)
    den = sum(float(((base[k].double() - init[k].double()) ** 2).sum()) for k in init)
    return (num / den) ** 0.5


@pytest.fixture
def plain(tiny_models, tiny_cityscapes):
    module, _ = make_module(tiny_models, tiny_cityscapes, kind="sdxl", lr=1e-4)
    init = {k: v.detach().clone() for k, v in module.controlnet.state_dict().items()}
    return tiny_cityscapes, init, train(tiny_models, tiny_cityscapes)


def test_gradient_checkpointing_gives_the_same_steps_exactly(tiny_models, plain):
    """Recomputing the forward in the backward runs the same fp32 kernels on the same inputs: bitwise equal."""
    data, _, (losses, weights) = plain
    ckpt_losses, ckpt_weights = train(tiny_models, data, gradient_checkpointing=True)
    assert ckpt_losses == losses
    for k, v in weights.items():
        assert torch.equal(ckpt_weights[k], v), k


def test_checkpointing_the_controlnet_only_gives_the_same_steps_exactly(tiny_models, plain):
    """`gradient_checkpointing: controlnet` recomputes the ControlNet only; the UNet keeps its activations: the
    same fp32 kernels on the same inputs, bitwise equal. The UNet is left without checkpointing."""
    data, _, (losses, weights) = plain
    module, _ = make_module(tiny_models, data, kind="sdxl", lr=1e-4, gradient_checkpointing="controlnet")
    assert module.controlnet.is_gradient_checkpointing and not module.unet.is_gradient_checkpointing
    ckpt_losses, ckpt_weights = train(tiny_models, data, gradient_checkpointing="controlnet")
    assert ckpt_losses == losses
    for k, v in weights.items():
        assert torch.equal(ckpt_weights[k], v), k


def test_channels_last_gives_the_same_loss_curve(tiny_models, plain):
    """NHWC convolutions sum in another order: fp32 rounding only (~1e-7 relative per op; 1.5e-7 on the
    losses here). Adam divides each update by its gradient's running RMS, so weights whose gradient is ~0 can move by
    up to lr per step either way: the update gap is bounded by 1e-2 (measured 3.2e-4), not by rounding."""
    data, init, (losses, weights) = plain
    nhwc_losses, nhwc_weights = train(tiny_models, data, channels_last=True)
    assert nhwc_losses == pytest.approx(losses, rel=1e-5)
    assert losses[0] != losses[-1]  # the curve moves: the comparison is not of constants
    assert update_gap(init, weights, nhwc_weights) < 1e-2


def test_the_stage_trains_channels_last_through_its_option(tiny_models, tiny_cityscapes, tmp_path):
    """`stages.train_controlnet.channels_last=true` runs end to end and saves the same ControlNet as the default
    run (contiguous safetensors; loaded back in the default layout)."""
    plain_run = make_job(tiny_models, tiny_cityscapes, tmp_path / "plain").run()
    nhwc_run = make_job(tiny_models, tiny_cityscapes, tmp_path / "nhwc", channels_last=True,
                        gradient_checkpointing="auto").run()
    assert plain_run["compile"] is False and nhwc_run["compile_reason"] == "auto: off, not on CUDA"
    assert plain_run["gradient_checkpointing"] is False and plain_run["gradient_checkpointing_reason"] == "set to false"
    assert nhwc_run["gradient_checkpointing"] is True  # auto off CUDA: both networks, and the record says why
    assert nhwc_run["gradient_checkpointing_reason"] == "auto: true, not on CUDA (no memory measured)"
    assert plain_run["steady_rates"]["train_controlnet"]["compiled"] is False  # the stage table's eager comparison
    assert plain_run["vae_fp32"] is True and plain_run["vae_fp32_reason"] == "null: float32, precision 32"
    a = ControlNetModel.from_pretrained(plain_run["final_dir"]).state_dict()
    b = ControlNetModel.from_pretrained(nhwc_run["final_dir"]).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4, msg=key)


@pytest.mark.parametrize("bad", ["yes", 1])
def test_bad_channels_last_names_the_key(bad):
    """The stage schema (synthrel/schemas.py, checked at composition) names the key and what it takes."""
    from synthrel.controlnet.job import TrainControlNetJob
    from synthrel.schemas import check_settings

    problems = check_settings(TrainControlNetJob, {"channels_last": bad}, "stages.train_controlnet")
    assert any("stages.train_controlnet.channels_last" in p and "bool" in p for p in problems), problems


H100_PEAK = {"peak_gib": 61.17, "batch": 8, "resolution": 1024, "card": "NVIDIA H100 80GB HBM3",
             "source": "train_levers_sdxl_split_h100.json"}


@pytest.mark.parametrize(("card_gib", "batch", "resolution", "expected"), [
    (79.2, 8, 1024, "controlnet"),   # 61.17 x 1.1 = 67.3 GiB fits an H100's 79.2
    (139.8, 8, 1024, "controlnet"),  # H200
    (47.5, 8, 1024, True),           # a 48 GB card: both networks (41.5 GiB measured)
    (79.2, 16, 1024, True),          # twice the batch: 61.17 x 2 x 1.1 = 134.6 GiB
    (139.8, 16, 1024, "controlnet"), # 134.6 GiB fits an H200's 139.8
    (79.2, 4, 1024, "controlnet"),   # smaller runs are not scaled down: the measured peak is the bound
])
def test_checkpointing_auto_takes_the_controlnet_only_where_the_card_holds_the_measured_peak(card_gib, batch,
                                                                                            resolution, expected):
    from synthrel.runstats import checkpointing_choice

    choice, why = checkpointing_choice("auto", key="k", card_gib=card_gib, batch=batch, resolution=resolution,
                                       measured=H100_PEAK)
    assert choice == expected, why
    assert why.startswith(f"auto: {str(expected).lower()}") and "train_levers_sdxl_split_h100.json" in why


@pytest.mark.parametrize(("card_gib", "compiled", "expected"), [
    (79.2, True, False),           # 66 x 1.1 = 72.6 GiB fits an H100 when compiled
    (79.2, False, "controlnet"),   # eager: the compiled peak says nothing (eager batch 8 without it ran out)
    (70.0, True, "controlnet"),    # 72.6 does not fit; the controlnet-only 67.3 does
    (47.5, True, True),
])
def test_checkpointing_auto_drops_checkpointing_only_where_the_compiled_peak_fits(card_gib, compiled, expected):
    from synthrel.runstats import checkpointing_choice

    measured = {**H100_PEAK, "compiled_off": {**H100_PEAK, "peak_gib": 66.0, "source": "train_levers_sdxl_h100.json"}}
    choice, why = checkpointing_choice("auto", key="k", card_gib=card_gib, batch=8, resolution=1024,
                                       measured=measured, compiled=compiled)
    assert choice is expected if isinstance(expected, bool) else choice == expected, why
    assert why.startswith(f"auto: {str(expected).lower()}, ")
    assert ("compiled without checkpointing" in why) is compiled


def test_checkpointing_auto_is_both_networks_off_cuda_or_unmeasured_and_set_values_stay():
    from synthrel.errors import ConfigError
    from synthrel.runstats import checkpointing_choice

    common = dict(key="stages.train_controlnet", batch=8, resolution=1024)
    assert checkpointing_choice("auto", card_gib=None, measured=H100_PEAK, **common)[0] is True
    assert checkpointing_choice("auto", card_gib=79.2, measured=None, **common)[0] is True
    for setting in (True, False, "controlnet"):
        assert checkpointing_choice(setting, card_gib=None, measured=None, **common)[0] == setting
    with pytest.raises(ConfigError, match="stages.train_controlnet.gradient_checkpointing.*controlnet .the ControlNet only. or auto"):
        checkpointing_choice("unet", card_gib=79.2, measured=H100_PEAK, **common)


def test_the_packaged_sdxl_row_carries_the_measured_peak():
    """measured_rates.json (written by `budget --write-rates`) holds what `auto` decides with, from the sweeps."""
    from synthrel.runstats import checkpointing_cost

    measured = checkpointing_cost("sdxl")
    assert measured["peak_gib"] > 41.5 and measured["batch"] == 8 and measured["resolution"] == 1024
    assert measured["source"].startswith("train_levers_sdxl_")
    assert checkpointing_cost("sd15") is None


@pytest.mark.parametrize("bad", ["unet", 2, 1])
def test_bad_gradient_checkpointing_names_the_key(bad, tiny_models, tiny_cityscapes, tmp_path):
    from synthrel.errors import ConfigError

    with pytest.raises(ConfigError, match="stages.train_controlnet.gradient_checkpointing"):
        make_job(tiny_models, tiny_cityscapes, tmp_path, gradient_checkpointing=bad)


def encoder_outputs(models, data, vae_fp32: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One bf16-mixed step's VAE encoder output (as Lightning runs it: the loss under autocast), its input pixels,
    and the VAE itself."""
    module, train_data = make_module(models, data, kind="sdxl", lr=1e-4, vae_fp32=vae_fp32)
    module.prepare("bf16-mixed")
    seen = {}
    module.vae.encoder.register_forward_hook(lambda m, args, out: seen.update(pixels=args[0], out=out))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module.diffusion_loss(default_collate([train_data[0], train_data[1]]))
    return seen["out"], seen["pixels"], module.vae


def test_vae_fp32_encodes_in_float32_outside_the_trainers_autocast(tiny_models, tiny_cityscapes):
    """`vae_fp32: true` (diffusers' upcast of SDXL's VAE): the encoder gives exactly what a float32 encode of the same
    pixels gives with no autocast, the reference. Before, autocast ran its convolutions in bf16 whatever its weights."""
    out, pixels, vae = encoder_outputs(tiny_models, tiny_cityscapes, vae_fp32=True)
    assert out.dtype == pixels.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(out, vae.encoder(pixels))
    low, low_pixels, _ = encoder_outputs(tiny_models, tiny_cityscapes, vae_fp32=False)
    assert low.dtype == torch.bfloat16 and low_pixels.dtype == torch.bfloat16
    assert not torch.equal(low.float(), out)


@pytest.mark.parametrize(("setting", "sdxl", "fixed_vae", "precision", "expected"), [
    (None, True, False, "bf16-mixed", False),  # bfloat16 has float32's range: SDXL's VAE does not overflow
    (None, True, False, "16-mixed", True),     # ...in float16 it does (the reason for diffusers' upcast)
    (None, True, True, "16-mixed", False),     # a fixed VAE (madebyollin/sdxl-vae-fp16-fix) runs in float16
    (None, False, False, "16-mixed", False),   # SD1.5's VAE runs in float16
    (None, True, False, "32", True),
    (True, True, False, "bf16-mixed", True),   # diffusers' train_controlnet_sdxl.py, whatever the precision
    (False, True, False, "16-mixed", False),
])
def test_vae_precision_null_is_float32_only_for_sdxls_own_vae_in_float16(setting, sdxl, fixed_vae, precision,
                                                                         expected):
    from synthrel.controlnet.module import vae_precision_choice

    choice, why = vae_precision_choice(setting, sdxl=sdxl, fixed_vae=fixed_vae, precision=precision)
    assert choice is expected, why
    assert why.startswith("set to" if setting is not None else "null")
