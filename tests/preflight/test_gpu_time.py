"""preflight=true prints each stage's GPU time of THIS run (#33 item 5): its work counts, computed here by hand
from the overrides, times the rates of `python -m benchmarks.run budget` (benchmarks.budget.build_rows on
docs/bench_results, not the package's copy). Where the run's counts are the paper's, the hours are the budget's."""

import pytest
from huggingface_hub import constants
from omegaconf import OmegaConf

from benchmarks.budget import RESULTS, build_rows
from synthrel.preflight import collect, gate
from synthrel.preflight.report import gpu_hours
from synthrel.run import STAGE_ORDER


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """An empty HF cache, offline (nothing to look up: the report lists everything as missing)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def budget():
    rows, _, _ = build_rows(RESULTS)
    return {r.stage: r for r in rows}


def shown(hours: float) -> str:
    return f"~{hours:.2f} h on 1 GPU" if hours >= 0.1 else f"~{hours * 60:.1f} min on 1 GPU"


def hours_of(cfg):
    stages = [s for s in STAGE_ORDER if s in cfg.stages]
    return gpu_hours(cfg, stages, collect(cfg, STAGE_ORDER))


@pytest.mark.parametrize("backbone,label", [("sd15", "SD1.5"), ("sdxl", "SDXL")])
def test_generate_and_evaluate_hours_are_this_runs_counts(compose_cfg, budget, backbone, label):
    hours = hours_of(compose_cfg("+experiment=covariate_fog", f"backbone={backbone}",
                                 "stages.generate.num_samples=100"))
    # 1 domain (fog) x 100, not the paper's 5 x 512: too few to pay back the compile, so eager (compile: auto)
    rate = budget[f"generate {label}"].compile_trade["eager_per_s"]
    assert hours["generate"].startswith(shown(100 / rate / 3600)) and f"eager at {rate:.3g}/s" in hours["generate"]
    # the 40 models of paper40 on the 100 synthetic images, Cityscapes frankfurt (267, spec 2.1: the test split
    # of real_split=test) and ACDC fog train (400): none on disk, counted at their published sizes
    evaluate = 40 * (100 + 267 + 400) / budget["evaluate"].measured.per_s / 3600
    assert hours["evaluate"].startswith(shown(evaluate))
    assert "cityscapes_test 267 (published size)" in hours["evaluate"]


def test_the_paper_counts_give_the_budgets_hours(compose_cfg, budget):
    """The run's counts equal the budget's rows (5 domains x 512 with SDXL, 42 objects x 512, 2100 steps x 8 x 32):
    the same hours as `python -m benchmarks.run budget`."""
    sdxl = hours_of(compose_cfg("+stage=[generate]", "backbone=sdxl", "domain=paper5"))
    assert sdxl["generate"].startswith(shown(budget["generate SDXL"].hours_1))
    # the budget counts inpainting at its fast path, batch 8 (docs/benchmarks.md#fast-paths)
    inpaint = hours_of(compose_cfg("+experiment=ood_objects", "stages.inpaint.batch_size=8"))["inpaint"]
    total = sum(budget[r].hours_1 for r in ("inpaint", "inpaint: refine", "inpaint: Grounded-SAM"))
    assert inpaint.startswith(shown(total))
    train = hours_of(compose_cfg("+experiment=train_controlnet"))
    assert train["train_controlnet"].startswith(shown(budget["train_controlnet SD1.5"].hours_1))
    # caption: Cityscapes train + val at their published sizes, the budget's 3475 images
    assert train["caption"].startswith(shown(budget["caption"].hours_1))


def test_a_run_at_the_stages_defaults_is_counted_at_their_rates(compose_cfg, budget):
    """The budget counts inpainting at batch 8 and evaluation in bf16 compiled (their fast paths); a run at the
    stages' defaults is counted at the rates measured at those defaults (inpaint: batch 1), or, where they are not
    measured (evaluate's fp32 eager), at the fast path's rate with a line that says so."""
    row = budget["inpaint"]
    assert row.measured.fast_path == {"batch_size": 8} and row.measured.default is not None
    inpaint = hours_of(compose_cfg("+experiment=ood_objects"))["inpaint"]
    assert f"compiled at {row.measured.default.per_s:.3g}/s" in inpaint
    assert f"compiled at {row.measured.per_s:.3g}/s" not in inpaint
    evaluate = hours_of(compose_cfg("+stage=[evaluate]"))["evaluate"]
    assert "the fast path's rate, `precision=bf16 compile=true`: this run's settings are not measured" in evaluate


def test_smaller_runs_show_their_own_hours(compose_cfg, budget):
    inpaint = hours_of(compose_cfg("+experiment=ood_objects", "profile.inpaint_objects=[zebra,elephant]",
                                   "profile.ood_samples_per_object=10", "stages.inpaint.refine=false"))["inpaint"]
    items = 2 * 10  # no refinement call; eager (compile: auto: 20 items do not pay back the compile)
    expected = items / budget["inpaint"].compile_trade["eager_per_s"] + \
        items / budget["inpaint: Grounded-SAM"].measured.per_s
    assert inpaint.startswith(shown(expected / 3600)) and "refine" not in inpaint
    compiled = hours_of(compose_cfg("+experiment=ood_objects", "profile.inpaint_objects=[zebra,elephant]",
                                    "profile.ood_samples_per_object=10", "stages.inpaint.compile=reduce-overhead",
                                    "stages.inpaint.refine=false"))["inpaint"]  # as set: compiled, and its compile
    trade = budget["inpaint"].compile_trade
    expected = items / trade["compiled_per_s"] + trade["compile_s"] + \
        items / budget["inpaint: Grounded-SAM"].measured.per_s
    assert compiled.startswith(shown(expected / 3600)) and "s of compile" in compiled
    train = hours_of(compose_cfg("+experiment=train_controlnet", "backbone.train.max_steps=10"))
    assert train["train_controlnet"].startswith(shown(10 * 8 * 32 / budget["train_controlnet SD1.5"].measured.per_s
                                                      / 3600))


def test_rba_fine_tunes_count_runs_times_steps(compose_cfg, budget):
    cfg = compose_cfg("+experiment=ood_detection", "stages.ood_detection.rba.finetune.enabled=true",
                      "stages.ood_detection.rba.finetune.bases=[rba_swin_b]",
                      "stages.ood_detection.rba.finetune.max_steps=100")
    line = hours_of(cfg)["ood_detection"]
    runs = len(cfg.stages.ood_detection.rba.finetune.variants)  # Table 2's variants, one run each
    assert "RbA Swin-B fine-tunes: " + f"{runs * 100:,} steps ({runs} run(s) x 100 steps)" in line
    assert "Swin-L fine-tunes" not in line


def test_report_prints_them_and_the_tiny_profile_does_not(compose_cfg, capsys, budget):
    with pytest.raises(SystemExit):
        gate(compose_cfg("+experiment=covariate_fog", "preflight=true"), STAGE_ORDER)
    out = capsys.readouterr().out
    assert "GPU time (estimates: this run's work counts" in out
    fog = 512 / budget["generate SD1.5"].compile_trade["eager_per_s"] / 3600  # one domain of 512 images: eager
    assert f"generate         {shown(fog)}" in out
    tiny = compose_cfg("+experiment=demo")
    assert OmegaConf.select(tiny, "profile.tiny") and gpu_hours(tiny, list(tiny.stages)) == {}
