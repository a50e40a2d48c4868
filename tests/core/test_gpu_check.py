"""`python -m synthrel.run +experiment=gpu_check` as a user runs it (#33): every stage through the CLI in one
process, the stage table written with one row per stage, the environment line in the log. On CPU (CI) the
memory fields are None; on a GPU (`-m gpu`) they are byte counts and the run passing means no stage kept its
memory. The demo data is made smaller than the demo's (as the reliability world's), calibration and correlation
lighter, to keep the CPU run short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from synthrel.run import STAGE_ORDER

REPO = Path(__file__).resolve().parents[2]
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "TQDM_DISABLE": "1",
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
SMALL = ["stages.demo_data.n_train=4", "stages.demo_data.n_val=4", "stages.demo_data.n_shift=2",
         "stages.demo_data.n_ood=2",  # and the two slowest CPU stages lighter (calibrate: 7 min under load)
         "stages.calibrate.methods=[global]", "stages.correlate.bootstrap.n_resamples=50",
         "stages.correlate.ablation.repeats=1"]


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_gpu_check_runs_every_stage_and_writes_the_stage_table(tmp_path, device):
    result = subprocess.run([sys.executable, "-m", "synthrel.run", "+experiment=gpu_check", f"device={device}",
                             f"paths.root_dir={tmp_path}", *SMALL], cwd=tmp_path,
                            env={**os.environ, **ENV}, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    [table_md] = (tmp_path / "outputs" / "logs" / "gpu_check").rglob("stage_table.md")
    data = json.loads(table_md.with_suffix(".json").read_text())
    stages = [row["stage"] for row in data["stages"]]
    assert stages == list(STAGE_ORDER)  # every stage, in pipeline order
    text = table_md.read_text()
    assert all(f"| {s} |" in text for s in STAGE_ORDER)
    summary = yaml.safe_load((table_md.parent / "summary.yaml").read_text())
    assert set(summary) == set(STAGE_ORDER)
    for row in data["stages"]:
        assert row["wall_s"] >= 0 and summary[row["stage"]]["stage_stats"]["wall_s"] == row["wall_s"]
        memory = [row[k] for k in ("cuda_before_bytes", "cuda_after_bytes", "cuda_peak_bytes")]
        if device == "cpu":
            assert memory == [None, None, None], row
        else:  # CUDA is initialised at start-up (the log's card line), so every stage has its figures
            assert all(isinstance(m, int) for m in memory), row
    assert [r["benchmark"] for r in data["stages"] if r["stage"] == "generate"][0]  # the budget's rates beside
    # steady rates: every image of the main loop counted once, as warm-up (the first batch) or as steady
    steady = {s: summary[s].get("steady_rates") for s in STAGE_ORDER}
    assert {s for s, r in steady.items() if r} == {"caption", "train_controlnet", "generate", "inpaint", "evaluate",
                                                   "ood_detection", "fid"}
    gen = steady["generate"]["generate"]
    assert gen["units"] + gen["warmup_units"] == summary["generate"]["generated"] and gen["per_s"] > 0
    assert gen["warmup_units"] == min(8, summary["generate"]["generated"])  # the first batch (batch_size 8)
    assert summary["generate"]["compile"] is False  # auto: a few images never pay for a compile (nor a CPU)
    assert summary["generate"]["compile_reason"].startswith("auto: off")
    cap = steady["caption"]["caption"]
    assert cap["units"] + cap["warmup_units"] == summary["caption"]["captioned"]
    inpaint = steady["inpaint"]
    assert {k: v["units"] + v["warmup_units"] for k, v in inpaint.items()} == {
        "inpaint": summary["inpaint"]["items"], "inpaint: refine": summary["inpaint"]["items"],
        "inpaint: Grounded-SAM": summary["inpaint"]["items"]}
    row = next(r for r in data["stages"] if r["stage"] == "generate")
    assert row["steady"] == steady["generate"] and "generate:" in text.split("| generate |")[1].split("\n")[0]
    log = result.stdout + result.stderr
    assert f"device={device}" in log and f"torch={torch.__version__}" in log and "evaluate(precision=" in log


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


@pytest.mark.parametrize("backbone, per_domain", [("sd15", 32), ("sdxl", 8)])
def test_gpu_check_rates_raises_only_counts(compose_cfg, backbone, per_domain):
    """`gpu_check=rates` (docs/benchmarks.md#gpu-check): more images for the steady rates, no other setting."""
    from omegaconf import OmegaConf

    def stages(*extra):
        cfg = compose_cfg("+experiment=gpu_check", "profile=smoke", f"backbone={backbone}", *extra)
        return _leaves(OmegaConf.to_container(cfg.stages, resolve=True))

    short, rates = stages(), stages("gpu_check=rates")
    changed = {k for k in short if short[k] != rates[k]}
    counts = {"generate.num_samples", "inpaint.samples_per_object",
              "demo_data.n_train", "demo_data.n_shift", "demo_data.n_ood", "ood_detection.rba.finetune.max_steps"}
    assert counts <= changed  # every count raised
    for key in changed - counts:  # besides them only the data and artifacts folders: its own
        assert str(rates[key]) == str(short[key]).replace("/smoke/", "/smoke_rates/", 1), key
    assert rates["generate.num_samples"] == per_domain and rates["generate.batch_size"] == short["generate.batch_size"]
    assert rates["demo_data.n_train"] == 24 and rates["demo_data.n_shift"] == 8
    assert all("/smoke/models" in str(rates[k]) for k in rates if "/smoke/models" in str(short[k]))  # models shared
