"""inpaint `compile: auto` (#33): the rule of train_controlnet's and generate's (synthrel.runstats.compile_choice)
on the inpaint row's measured trade in synthrel/measured_rates.json; the break-even computed here by hand from
docs/bench_results/gen_bench_inpaint_h200.json (batch 1, 512 px: the diffusers pipeline eager 0.527 img/s, the
accelerated one compiled with reduce-overhead 1.981 img/s after 86.53 s of warm-up, one H200 process)."""


from synthrel.ood_objects.job import InpaintJob
from synthrel.runstats import compile_cost


def job(tmp_path, **overrides) -> InpaintJob:
    return InpaintJob(**{"source": {}, "out_dir": str(tmp_path), "all_objects": ["lion"], "inpaint_model": "m",
                         "grounding_dino": "g", "sam": "s", "samples_per_object": 1, **overrides})


def test_the_measured_inpaint_trade_is_shipped():
    trade = compile_cost(None, "inpaint")
    assert (trade["eager_per_s"], trade["compiled_per_s"], trade["compile_s"], trade["resolution"]) == \
        (0.527, 1.981, 86.53, 512)
    assert trade["card"] == "NVIDIA H200" and "diffusers pipeline" in trade["source"]


def test_auto_compiles_from_the_break_even_by_hand(tmp_path):
    """86.53 s / (1/0.527 - 1/1.981) s per item = 62.1 items at 512 px; a 256 px patch costs a quarter: 249."""
    inpaint = job(tmp_path)
    assert inpaint.compile == "auto"  # the default
    assert inpaint.compile_mode(True, 62)[0] is None and inpaint.compile_mode(True, 63)[0] == "reduce-overhead"
    mode, why = inpaint.compile_mode(True, 42 * 512 // 8)  # the paper's items, one shard of 8
    assert mode == "reduce-overhead" and why.startswith("auto: on, 2688 images per device save 3744 s > 87 s")
    small = job(tmp_path, patch_size=256)
    assert small.compile_mode(True, 248)[0] is None and small.compile_mode(True, 249)[0] == "reduce-overhead"


def test_eager_on_cpu_and_as_set(tmp_path):
    assert job(tmp_path).compile_mode(False, 10**6) == (None, "auto: off, not on CUDA")
    assert job(tmp_path, compile="default").compile_mode(True, 1) == ("default", "set to default")
    assert job(tmp_path, compile="default").compile_mode(False, 1) == (None, "set to default, but not on CUDA: eager")
    assert job(tmp_path, compile=None).compile_mode(True, 10**6) == (None, "set to null: eager")


def test_stage_config_default(compose_cfg):  # a bad value: tests/core/test_stage_schemas.py
    assert compose_cfg("+stage=[inpaint]").stages.inpaint.compile == "auto"
