"""preflight=true on the paper profile prints each stage's GPU time from the rates and work counts that
`python -m benchmarks.run budget` uses (#33 item 5): the hours are recomputed here from budget's own rows."""

import pytest
from huggingface_hub import constants
from omegaconf import OmegaConf

from benchmarks.budget import RESULTS, build_rows
from synthrel.preflight import gate
from synthrel.preflight.report import gpu_hours
from synthrel.run import STAGE_ORDER


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty HF cache, offline (nothing to look up: the report lists everything as missing)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def budget_hours():
    rows, _, _ = build_rows(RESULTS)
    return {r.stage: r.hours_1 for r in rows}


@pytest.mark.parametrize("backbone,label", [("sd15", "SD1.5"), ("sdxl", "SDXL")])
def test_generate_and_evaluate_hours_are_the_budgets(compose_cfg, budget_hours, backbone, label):
    cfg = compose_cfg("+experiment=covariate_fog", f"backbone={backbone}")
    hours = gpu_hours(cfg, ["generate", "evaluate"])
    assert hours["generate"].startswith(f"~{budget_hours[f'generate {label}']:.2f} h on 1 GPU")
    assert hours["evaluate"].startswith(f"~{budget_hours['evaluate']:.2f} h on 1 GPU")


def test_inpaint_sums_its_three_calls(compose_cfg, budget_hours):
    hours = gpu_hours(compose_cfg("+experiment=ood_objects"), ["inpaint"])
    total = budget_hours["inpaint"] + budget_hours["inpaint: refine"] + budget_hours["inpaint: Grounded-SAM"]
    assert hours["inpaint"].startswith(f"~{total:.2f} h")


def test_report_prints_them_and_the_tiny_profile_does_not(compose_cfg, empty_hub, capsys, budget_hours):
    with pytest.raises(SystemExit):
        gate(compose_cfg("+experiment=covariate_fog", "preflight=true"), STAGE_ORDER)
    out = capsys.readouterr().out
    assert "GPU time (estimates at the paper's work counts" in out
    assert f"generate         ~{budget_hours['generate SD1.5']:.2f} h on 1 GPU" in out
    tiny = compose_cfg("+experiment=demo")
    assert OmegaConf.select(tiny, "profile.tiny") and gpu_hours(tiny, list(tiny.stages)) == {}
