"""generate `compile: auto` (#33, #36): the rule of train_controlnet's (synthrel.runstats.compile_choice) on the
generate rows' measured trade in synthrel/measured_rates.json; break-evens computed here by hand from the
numbers of docs/bench_results (ControlNetSampler at batch 8 on an H100)."""

from functools import partial

import pytest

from synthrel import runstats
from synthrel.errors import ConfigError
from synthrel.runstats import compile_cost

compile_choice = partial(runstats.compile_choice, key="stages.generate")
SD15, SDXL = compile_cost("sd15", "generate"), compile_cost("sdxl", "generate")


def auto(images, measured, resolution, cuda=True):
    return compile_choice("auto", cuda=cuda, images_per_device=images, resolution=resolution, measured=measured)


def test_the_measured_generate_trades_are_shipped():
    """gen_bench_sd15_fast_eager_h100.json batch 8 3.814 img/s; gen_bench_sd15_final_h100.json batch 8 6.068
    after 124.33 s (its first call, batch 1) + 32.55 s (batch 8) of warm-up; SDXL 0.636 -> 0.847 after 275.19 s."""
    assert (SD15["eager_per_s"], SD15["compiled_per_s"], SD15["resolution"]) == (3.814, 6.068, 512)
    assert SD15["compile_s"] == pytest.approx(124.33 + 32.55)
    assert (SDXL["eager_per_s"], SDXL["compiled_per_s"], SDXL["compile_s"], SDXL["resolution"]) == \
        (0.636, 0.847, 275.19, 1024)
    assert "H100" in SD15["card"] and "H100" in SDXL["card"]
    assert SD15["source"] == "gen_bench_sd15_fast_eager_h100.json + gen_bench_sd15_final_h100.json"


def test_break_even_by_hand():
    """156.88 s / (1/3.814 - 1/6.068) s per image = 1610.8 images (SD1.5); 275.19 / (1/0.636 - 1/0.847) = 702.6."""
    assert not auto(1610, SD15, 512)[0] and auto(1611, SD15, 512)[0]
    assert not auto(702, SDXL, 1024)[0] and auto(703, SDXL, 1024)[0]
    on, why = auto(5 * 512, SD15, 512)  # a paper5 job: 5 domains x 512
    assert on and why.startswith("auto: on, 2560 images per device save 249 s > 157 s of compile")  # 2560 x 0.0974
    assert not auto(512, SD15, 512)[0] and not auto(512, SDXL, 1024)[0]  # one 512 set of one domain
    assert auto(5 * 512, SDXL, 1024)[0] and auto(28 * 64, SD15, 512)[0]  # paper5 SDXL; all_domains (1792)
    assert not auto(5 * 512 // 8, SD15, 512)[0]  # a paper5 job as one of 8 shards: 320 images stay eager


def test_off_on_cpu_without_a_measurement_and_as_set():
    assert auto(10**6, SD15, 512, cuda=False) == (False, "auto: off, not on CUDA")
    assert "no measured compile cost" in auto(10**6, None, 512)[1]
    assert compile_choice(True, cuda=True, images_per_device=1, resolution=64, measured=SD15) == (True, "set to true")
    assert compile_choice(False, cuda=True, images_per_device=10**6, resolution=512, measured=SD15)[0] is False


def test_the_saving_scales_with_the_pixels():
    """At 256 px an SD1.5 image costs a quarter of the measured 512 px one: four times the images to pay back."""
    assert not auto(4 * 1610, SD15, 256)[0] and auto(4 * 1611, SD15, 256)[0]


def test_stage_config_defaults(compose_cfg):
    stage = compose_cfg("+stage=[generate]").stages.generate
    assert stage.batch_size == 8 and stage.compile == "auto" and stage.sampler == "fast"


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_compile_values_name_the_key(value, tmp_path):
    from synthrel.generation.job import GenerateJob

    with pytest.raises(ConfigError, match=r"`stages\.generate\.compile` must be true, false or auto"):
        GenerateJob(source={}, captions="c.jsonl", out_root=str(tmp_path), set_name="fog", backbone="sd15",
                    pretrained="p", controlnet="c", trained_controlnet="t", domains=["fog"], num_samples=1,
                    samples_per_domain_all=1, compile=value)
