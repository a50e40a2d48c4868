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


# ------------------------------------------------------------------------------------------ steady rates
class Clock:
    """perf_counter replaced by a clock the test moves by hand."""

    def __init__(self, monkeypatch):
        self.now = 100.0
        monkeypatch.setattr(runstats.time, "perf_counter", lambda: self.now)


def test_a_loop_counts_the_time_and_units_after_its_warm_up_batches(monkeypatch):
    clock = Clock(monkeypatch)
    rate = runstats.SteadyRate("image", warmup=2)
    with rate.loop():
        for seconds, units in ((30.0, 4), (5.0, 4), (1.0, 4), (1.5, 4), (0.5, 3)):  # load, compile, 3 steady
            clock.now += seconds
            rate.tick(units)
        clock.now += 0.25  # the loop's tail (last sync) counts
    result = rate.result()
    assert (result["units"], result["warmup_units"]) == (11, 8)
    assert result["seconds"] == pytest.approx(3.25) and result["warmup_seconds"] == pytest.approx(35.0)
    assert result["per_s"] == pytest.approx(round(11 / 3.25, 4))
    with rate.loop():  # a second loop (another model or set): its own warm-up, then summed
        for seconds in (9.0, 2.0, 1.5):
            clock.now += seconds
            rate.tick(5)
    result = rate.result()
    assert (result["units"], result["warmup_units"]) == (16, 18)
    assert result["seconds"] == pytest.approx(4.75) and result["warmup_seconds"] == pytest.approx(46.0)


def test_a_loop_of_warm_up_only_has_no_rate_and_tick_needs_a_loop(monkeypatch):
    Clock(monkeypatch)
    rate = runstats.SteadyRate()
    with rate.loop():
        rate.tick(8)
    assert rate.result()["per_s"] is None and rate.result()["units"] == 0 and rate.result()["warmup_units"] == 8
    with pytest.raises(RuntimeError, match="outside"):
        rate.tick(1)


def test_timed_parts_count_only_their_own_time_after_the_first_call(monkeypatch):
    clock = Clock(monkeypatch)
    part = runstats.SteadyRate("image")
    for seconds in (12.0, 0.5, 0.75):
        with part.timed(1):
            clock.now += seconds
        clock.now += 100.0  # the batch's other parts: not this part's time
    assert (part.units, part.warmup_units, part.seconds, part.warmup_seconds) == (2, 1, 1.25, 12.0)
    total = runstats.SteadyRate("image")
    total.add(part)
    total.add(part)
    assert (total.units, total.seconds, total.warmup_units) == (4, 2.5, 2)


def test_a_loop_synchronises_cuda_at_the_end_of_the_warm_up_and_at_its_end(monkeypatch):
    calls = []
    monkeypatch.setattr(runstats, "cuda_in_use", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.append("sync"))
    rate = runstats.SteadyRate()
    with rate.loop():
        for _ in range(5):
            rate.tick(2)
            calls.append("batch")
    assert calls == ["sync"] + ["batch"] * 5 + ["sync"]  # none per steady batch


def _rates():
    return json.loads((runstats.resources.files("synthrel") / runstats.RATES_FILE).read_text())["rows"]


def test_the_stage_table_sets_each_steady_rate_beside_its_benchmark():
    rates = _rates()
    sd15, scoring = rates["generate SD1.5"]["per_s"], rates["ood_detection: RbA Swin-B scoring"]["per_s"]
    steady = {"generate": {"unit": "image", "units": 36, "seconds": 6.0, "per_s": 0.5 * sd15, "warmup_units": 4,
                           "note": "batch 4"}}
    ood = {"ood_detection: RbA Swin-B scoring": {"unit": "image", "units": 7, "seconds": 1.0, "per_s": scoring,
                                                 "warmup_units": 1, "note": ""},
           "ood_detection: RbA Swin-B fine-tunes": {"unit": "image", "units": 9, "seconds": 1.0, "per_s": 9.0,
                                                    "warmup_units": 1, "note": ""},  # unit differs: no ratio
           "evaluate: none": {"unit": "image", "units": 0, "seconds": 0.0, "per_s": None, "warmup_units": 2}}
    stats = [StageStats("generate", 60.0, images=40, steady=steady), StageStats("ood_detection", 9.0, steady=ood),
             StageStats("correlate", 1.0)]
    text, data = stage_table(stats, "cuda", backbone="sd15")
    gen, ood_row, corr = data["stages"]
    assert gen["vs_benchmark"]["generate"]["benchmark"] == "generate SD1.5"
    assert gen["vs_benchmark"]["generate"]["ratio"] == pytest.approx(0.5, abs=1e-3)
    assert gen["vs_benchmark"]["generate"]["slow"] and data["slow"] == ["generate"]
    assert ood_row["vs_benchmark"]["ood_detection: RbA Swin-B scoring"]["ratio"] == pytest.approx(1.0)
    assert not ood_row["vs_benchmark"]["ood_detection: RbA Swin-B scoring"]["slow"]
    assert set(ood_row["vs_benchmark"]) == {"ood_detection: RbA Swin-B scoring"}
    assert corr["vs_benchmark"] == {}
    line = next(li for li in text.splitlines() if li.startswith("| generate"))
    cells = [c.strip() for c in line.split("|")]
    assert cells[8].startswith(f"generate: {0.5 * sd15:.3g} image/s (36 in 6.0 s; batch 4)")
    assert cells[9].startswith("generate: 0.50x **SLOW (< 0.8)**")
    tiny_text, tiny = stage_table(stats, "cpu", backbone="sd15", comparable=False)  # tiny models: no ratio
    assert all(row["vs_benchmark"] == {} for row in tiny["stages"]) and tiny["slow"] == []
    assert "| - (tiny models) |" in next(li for li in tiny_text.splitlines() if li.startswith("| generate"))
    _, sdxl = stage_table(stats, "cuda", backbone="sdxl")
    assert sdxl["stages"][0]["vs_benchmark"]["generate"]["ratio"] == pytest.approx(
        0.5 * sd15 / rates["generate SDXL"]["per_s"], rel=1e-3)


def test_the_lightning_callback_times_the_batches_after_the_first_optimiser_step():
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    rate = runstats.SteadyRate("image", warmup=2)  # accumulate 2: the first optimiser step is 2 batches
    trainer = pl.Trainer(max_steps=3, accumulate_grad_batches=2, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[runstats.steady_rate_callback(rate, 3)])
    trainer.fit(Tiny(), DataLoader(TensorDataset(torch.ones(30, 2)), batch_size=3))
    assert (rate.warmup_units, rate.units) == (6, 12)  # 3 steps x 2 batches x 3 samples
    assert rate.result()["per_s"] > 0


def test_an_eager_run_is_set_beside_the_eager_rate_of_the_rows_compile_trade():
    """generate and train_controlnet rows carry eager and compiled rates (measured_rates.json `compile`): a stage
    that ran eager (rate `compiled` False) is compared with the eager one and says so; compiled or unknown: the
    row's (compiled) rate."""
    rates = _rates()
    gen, train = rates["generate SD1.5"], rates["train_controlnet SDXL"]
    eager_gen, eager_train = gen["compile"]["eager_per_s"], train["compile"]["eager_per_s"]
    assert (eager_gen, gen["per_s"]) == (3.814, 6.068)
    assert (eager_train, train["compile"]["compiled_per_s"]) == (6.14, 12.31)
    # the row: the stage's compiled run, measured without checkpointing (the SDXL default of a compiled run on an
    # H100), so not scaled again by the levers' gain of that setting
    assert train["per_s"] == 12.31 and "checkpointing off" in train["conditions"]

    def rate(per_s, compiled):
        return {"unit": "image", "units": 32, "seconds": 32 / per_s, "per_s": per_s, "compiled": compiled,
                "note": "batch 8"}

    eager = runstats.versus("generate", rate(3.0, False), "generate", "sd15")
    assert eager["ratio"] == pytest.approx(3.0 / 3.814, abs=1e-3) and eager["benchmark_per_s"] == 3.814
    assert eager["benchmark_conditions"] == \
        "eager, 512px, NVIDIA H100 80GB HBM3, gen_bench_sd15_fast_eager_h100.json"
    for compiled in (True, None):  # None: a rate recorded without the choice
        v = runstats.versus("generate", rate(3.0, compiled), "generate", "sd15")
        assert v["ratio"] == pytest.approx(3.0 / 6.068, abs=1e-3) and "compiled" in v["benchmark_conditions"]
    training = runstats.versus("train_controlnet", rate(6.0, False), "train_controlnet", "sdxl")
    assert training["ratio"] == pytest.approx(6.0 / 6.14, abs=1e-3) and not training["slow"]
    assert training["benchmark_conditions"].startswith("eager, 1024px")
    scoring = "ood_detection: RbA Swin-B scoring"  # a row without a trade: compiled False changes nothing
    v = runstats.versus(scoring, rate(rates[scoring]["per_s"], False), "ood_detection")
    assert v["ratio"] == pytest.approx(1.0)
    text, _ = stage_table([StageStats("generate", 20.0, images=40, steady={"generate": rate(3.0, False)})], "cuda",
                          backbone="sd15")
    assert "generate: 0.79x **SLOW (< 0.8)** (benchmark: eager, 512px" in text


def test_a_run_off_the_fast_path_meets_the_rate_at_the_defaults():
    """Rows counted at a named fast path (inpaint at batch 8, evaluate in bf16 compiled) set a run at the stage's
    defaults beside the row's default rate, or give no verdict where that rate is not measured: never a false SLOW."""
    rates = _rates()
    inpaint, evaluate = rates["inpaint"], rates["evaluate"]
    assert inpaint["fast_path"] == {"batch_size": 8} and inpaint["default"]["per_s"] < inpaint["per_s"]
    assert evaluate["fast_path"] == {"precision": "bf16", "compile": True} and evaluate["default"] is None

    def rate(per_s, **settings):
        return {"unit": "image", "units": 32, "seconds": 32 / per_s, "per_s": per_s, "compiled": True,
                "note": "", "settings": settings}

    default = inpaint["default"]["per_s"]
    at_default = runstats.versus("inpaint", rate(default, batch_size=1), "inpaint")
    assert at_default["ratio"] == pytest.approx(1.0) and not at_default["slow"]
    assert "batch 1" in at_default["benchmark_conditions"]
    fast = runstats.versus("inpaint", rate(default, batch_size=8), "inpaint")
    assert fast["ratio"] == pytest.approx(default / inpaint["per_s"], abs=1e-3) and fast["slow"]
    assert runstats.versus("evaluate", rate(5.0, precision="fp32", compile=False), "evaluate") is None
    on_path = runstats.versus("evaluate", rate(evaluate["per_s"], precision="bf16", compile=True), "evaluate")
    assert on_path["ratio"] == pytest.approx(1.0)
