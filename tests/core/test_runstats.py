"""Per-stage resources of a run (synthrel/runstats.py, #33): the memory-release check against hand-made byte
counts, the stage table on CPU (no memory figures), a stage that keeps GPU memory failing the run through
run_stages (CUDA's counters faked: no GPU on CI), and `device=cuda` without CUDA failing before any stage."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from synthrel import runstats
from synthrel.errors import ConfigError
from synthrel.runstats import MiB, StageStats, check_released, stage_table

GiB = 2**30


def test_check_released_flags_only_growth_beyond_the_margin():
    stats = [
        StageStats("caption", 1.0, cuda_before_bytes=0, cuda_after_bytes=100 * MiB, cuda_peak_bytes=GiB),
        StageStats("generate", 1.0, cuda_before_bytes=100 * MiB, cuda_after_bytes=100 * MiB + 2 * GiB,
                   cuda_peak_bytes=5 * GiB),
        StageStats("evaluate", 1.0, cuda_before_bytes=3 * GiB, cuda_after_bytes=GiB, cuda_peak_bytes=4 * GiB),
        StageStats("correlate", 1.0),  # CPU stage / no CUDA: nothing to check
    ]
    leaks = check_released(stats, margin_mb=128)
    assert len(leaks) == 1 and leaks[0].startswith("generate: 2048 MiB")
    assert check_released(stats, margin_mb=4096) == []
    assert len(check_released(stats, margin_mb=0)) == 2  # caption's 100 MiB too


def test_stage_table_on_cpu_has_no_memory_figures_and_quotes_the_benchmarks(tmp_path):
    stats = [StageStats("generate", 2.0, images=8), StageStats("correlate", 0.5)]
    text, data = stage_table(stats, "cpu")
    assert all(row["cuda_peak_bytes"] is None and row["cuda_after_bytes"] is None for row in data["stages"])
    assert data["run_peak_bytes"] is None
    generate, correlate = data["stages"]
    assert generate["images_per_s"] == pytest.approx(4.0) and correlate["images_per_s"] is None
    rates = json.loads((runstats.resources.files("synthrel") / runstats.RATES_FILE).read_text())["rows"]
    assert set(generate["benchmark"]) == {"generate SD1.5", "generate SDXL"}
    assert generate["benchmark"]["generate SDXL"]["per_s"] == rates["generate SDXL"]["per_s"]
    assert f"{rates['generate SD1.5']['per_s']:.3g} image/s" in text
    _, sdxl = stage_table(stats, "cpu", backbone="sdxl")
    assert set(sdxl["stages"][0]["benchmark"]) == {"generate SDXL"}  # the run's backbone only
    line = next(li for li in text.splitlines() if li.startswith("| correlate"))
    assert line.split("|")[5].strip() == "-"  # GPU peak column


class LeakyJob:
    """A stage that keeps `keep_mb` of (fake) GPU memory allocated after it returns."""

    def __init__(self, keep_mb: int = 0):
        self.keep_mb = keep_mb

    def run(self) -> dict:
        FakeCuda.allocated += self.keep_mb * MiB
        FakeCuda.peak = max(FakeCuda.peak, FakeCuda.allocated + GiB)
        return {"generated": 4}


class FakeCuda:
    allocated = 0
    peak = 0


@pytest.fixture
def fake_cuda(monkeypatch):
    FakeCuda.allocated = FakeCuda.peak = 0
    monkeypatch.setattr(runstats, "cuda_in_use", lambda: True)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: FakeCuda.allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: FakeCuda.peak)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: setattr(FakeCuda, "peak",
                                                                                  FakeCuda.allocated))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)


def _cfg(tmp_path, keep_mb: int, enabled: bool):
    return OmegaConf.create({
        "device": "cpu", "seed": 0, "shard": "0/1", "force": False, "cpu_threads": None,
        "paths": {"output_dir": str(tmp_path)},
        "stage_table": {"enabled": enabled, "release_margin_mb": 64},
        "stages": {"generate": {"_target_": f"{__name__}.LeakyJob", "keep_mb": keep_mb}},
    })


def test_run_stages_records_memory_per_stage_and_fails_a_stage_that_keeps_it(tmp_path, fake_cuda):
    from synthrel.run import run_stages

    summaries = run_stages(_cfg(tmp_path, keep_mb=10, enabled=True))
    assert summaries == {"generate": {"generated": 4}}  # the stage's own summary, unchanged
    summary = summaries.with_stats()["generate"]["stage_stats"]
    assert (summary["cuda_before_bytes"], summary["cuda_after_bytes"]) == (0, 10 * MiB)
    assert summary["cuda_peak_bytes"] == 10 * MiB + GiB and summary["images"] == 4
    table = json.loads((tmp_path / "stage_table.json").read_text())
    assert table["run_peak_bytes"] == 10 * MiB + GiB
    with pytest.raises(runstats.MemoryNotReleasedError, match=r"generate: 500 MiB still allocated"):
        run_stages(_cfg(tmp_path, keep_mb=500, enabled=True))
    run_stages(_cfg(tmp_path, keep_mb=500, enabled=False))  # outside gpu_check: a warning only


def test_cpu_run_records_wall_time_without_memory(tmp_path):
    from synthrel.run import run_stages

    summary = run_stages(_cfg(tmp_path, keep_mb=0, enabled=False)).with_stats()["generate"]["stage_stats"]
    assert summary["wall_s"] >= 0 and summary["cuda_peak_bytes"] is None and summary["cuda_after_bytes"] is None


def test_cuda_asked_for_without_cuda_fails_before_any_stage(compose_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_cfg("+experiment=gpu_check")
    assert cfg.device == "cuda"
    with pytest.raises(ConfigError, match=r"`device=cuda` but no CUDA device is available"):
        runstats.environment(cfg)


def test_environment_line_names_the_settings_in_force(compose_cfg):
    cfg = compose_cfg("+experiment=gpu_check", "device=cpu", "stages.evaluate.precision=bf16")
    line = runstats.environment(cfg)
    assert line.startswith("device=cpu card=CPU torch=" + torch.__version__)
    assert "evaluate(precision=bf16, compile=False)" in line
    assert "generate(" in line and "compile=" in line


def test_release_margin_is_checked(compose_cfg):
    from synthrel.config import check_run_keys

    with pytest.raises(ConfigError, match="stage_table.release_margin_mb"):
        check_run_keys(compose_cfg("stage_table.release_margin_mb=-1"))


class FailingJob:
    def run(self):
        raise RuntimeError("stage broke")


def test_the_stage_table_keeps_the_stages_done_before_one_fails(tmp_path):
    """gpu_check on a one-shot GPU job: a failing (or killed) later stage leaves the earlier rows on disk."""
    from synthrel.run import run_stages

    cfg = _cfg(tmp_path, keep_mb=0, enabled=True)
    cfg.stages.evaluate = {"_target_": f"{__name__}.FailingJob"}  # after generate in pipeline order
    with pytest.raises(RuntimeError, match="stage broke"):
        run_stages(cfg)
    table = json.loads((tmp_path / "stage_table.json").read_text())
    assert [row["stage"] for row in table["stages"]] == ["generate"]
