"""train_controlnet `compile: auto` (#36): compile where the run is long enough to pay for it, from the measured
trade in synthrel/measured_rates.json; the break-even is computed here by hand from those numbers."""

from functools import partial

import pytest

from synthrel import runstats
from synthrel.errors import ConfigError
from synthrel.runstats import compile_cost

compile_choice = partial(runstats.compile_choice, key="stages.train_controlnet")  # the stage's call

SDXL = compile_cost("sdxl")


def break_even_images(m: dict) -> float:
    """Images after which the compiled rate has paid back the compile: t / (1/eager - 1/compiled)."""
    return m["compile_s"] / (1 / m["eager_per_s"] - 1 / m["compiled_per_s"])


def auto(images, resolution=1024, cuda=True, measured=SDXL):
    return compile_choice("auto", cuda=cuda, images_per_device=images, resolution=resolution, measured=measured)


def test_the_measured_sdxl_trade_is_shipped():
    assert SDXL["eager_per_s"] == 6.14 and SDXL["compiled_per_s"] == 12.31 and SDXL["compile_s"] == 390.3
    assert SDXL["resolution"] == 1024 and "H100" in SDXL["card"]
    assert compile_cost("sd15") is None  # not measured: auto stays off


def test_paper_run_compiles_and_short_runs_do_not():
    assert 4775 < break_even_images(SDXL) < 4790  # 390.3 s / (1/6.14 - 1/12.31) s per image
    on, why = auto(27500 * 8 * 4)  # the paper's SDXL run (supplementary A.1) on one GPU
    assert on and why.startswith("auto: on") and "390 s of compile" in why
    assert auto(27500 * 8 * 4 // 8)[0]  # per device of an 8-GPU DDP run: still pays
    assert not auto(2 * 8 * 4)[0]  # profile=smoke: 2 steps of 8 x 4
    assert not auto(4 * 2 * 2, resolution=64)[0]  # profile=tiny
    edge = break_even_images(SDXL)
    assert not auto(int(edge) - 1)[0] and auto(int(edge) + 1)[0]


def test_the_saving_scales_with_the_pixels():
    """At 512 px an image costs a quarter of the measured 1024 px one: four times the images to pay back."""
    edge = break_even_images(SDXL) * 4
    assert not auto(int(edge) - 4, resolution=512)[0] and auto(int(edge) + 4, resolution=512)[0]


def test_off_on_cpu_and_without_a_measurement_and_as_set():
    assert auto(10**9, cuda=False) == (False, "auto: off, not on CUDA")
    on, why = auto(10**9, measured=None)
    assert not on and "no measured compile cost" in why
    assert compile_choice(True, cuda=False, images_per_device=1, resolution=64, measured=None) == (True, "set to true")
    assert compile_choice(False, cuda=True, images_per_device=10**9, resolution=1024, measured=SDXL)[0] is False


@pytest.mark.parametrize("value", ["yes", "on", 1, None])
def test_bad_compile_values_name_the_key(value):
    with pytest.raises(ConfigError, match=r"stages\.train_controlnet\.compile` must be true, false or auto"):
        compile_choice(value, cuda=True, images_per_device=1, resolution=64, measured=SDXL)


def test_stage_config_defaults_to_auto(compose_cfg):
    cfg = compose_cfg("+stage=[train_controlnet]", "backbone=sdxl")
    assert cfg.stages.train_controlnet.compile == "auto" and cfg.stages.train_controlnet.channels_last is False


@pytest.mark.parametrize(("profile", "compiles"), [("tiny", False), ("smoke", False), ("paper", True)])
def test_each_profiles_sdxl_run_on_a_gpu(compose_cfg, profile, compiles):
    """The rule on the composed stage config of each profile, as `+experiment=gpu_check profile=smoke` or the
    paper's run would see it on a GPU: smoke's 2 steps of 8 x 4 and tiny's 4 of 2 x 2 stay eager."""
    stage = compose_cfg("+stage=[train_controlnet]", f"profile={profile}", "backbone=sdxl").stages.train_controlnet
    images = stage.max_steps * stage.batch_size * stage.accumulate_grad_batches
    on, _ = compile_choice(stage.compile, cuda=True, images_per_device=images, resolution=stage.resolution,
                           measured=SDXL)
    assert on is compiles
