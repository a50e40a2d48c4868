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
    nhwc_run = make_job(tiny_models, tiny_cityscapes, tmp_path / "nhwc", channels_last=True).run()
    assert plain_run["compile"] is False and nhwc_run["compile_reason"] == "auto: off, not on CUDA"
    assert plain_run["steady_rates"]["train_controlnet"]["compiled"] is False  # the stage table's eager comparison
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
