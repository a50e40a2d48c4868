"""`logger=wandb` (offline): each stage of a run is its own wandb run, grouped by task name, job_type = the stage,
and the correlation tables land in the correlate stage's run, equal to the CSVs beside them."""

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from wandb.proto import wandb_internal_pb2

from synthrel.run import run_stages


def wandb_records(path: Path):
    """The protobuf records of an offline run file (`run-<id>.wandb`: a 7-byte W&B header, then LevelDB-log
    chunks of 32 KiB blocks, each record with a 7-byte header: crc, length, type)."""
    data = path.read_bytes()
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def write_results(root: Path, n_models: int = 5) -> None:
    rng = np.random.default_rng(0)
    for m in range(n_models):
        for dataset, domain, generator in (("acdc_fog", "fog", "real"), ("synthetic_sd15_fog", "fog", "sd15"),
                                           ("cityscapes", "cityscapes", "real")):
            out = root / f"m{m}" / dataset
            out.mkdir(parents=True)
            pd.DataFrame([{"model": f"m{m}", "family": "f", "dataset": dataset, "domain": domain,
                           "generator": generator, "metric": "mIoU", "cls": "", "value": rng.uniform(0.2, 0.8),
                           "n_images": 4, "profile": "paper"}]).to_parquet(out / "metrics.parquet")


def test_one_wandb_run_per_stage_grouped_by_task(compose_cfg, tiny_models, tiny_cityscapes, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    write_results(tmp_path / "results")
    train, corr = "stages.train_controlnet", "stages.correlate"
    cfg = compose_cfg(
        "+stage=[train_controlnet,correlate]", "logger=wandb", "task_name=wandb_check", "device=cpu",
        "real_split=all",  # write_results names the real sets as whole sets (acdc_fog)
        f"backbone.pretrained={tiny_models['sd15']}", "backbone.resolution=32", f"{train}.max_steps=2",
        f"{train}.batch_size=2", f"{train}.accumulate_grad_batches=1", f"{train}.num_workers=0",
        f"{train}.sample_every_n_steps=0", f"{train}.dataset.root={tiny_cityscapes['root']}",
        f"{train}.captions={tiny_cityscapes['captions']}", f"{train}.output_dir={tmp_path}/controlnet",
        f"{corr}.results_root={tmp_path}/results", f"{corr}.calibration_root=null", f"{corr}.metrics=[mIoU]",
        f"{corr}.class_metrics=[]", f"{corr}.domains=[fog]", f"{corr}.bootstrap.n_resamples=10",
        f"{corr}.ablation.sizes=[]", f"{corr}.output_dir={tmp_path}/analysis",
    )
    run_stages(cfg)

    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, runs
    by_type = {}
    for run in runs:
        (record,) = [r.run for r in wandb_records(next(run.glob("run-*.wandb"))) if r.HasField("run")]
        assert (record.run_group, record.project) == ("wandb_check", "synthrel")
        by_type[record.job_type] = run
    assert set(by_type) == {"train_controlnet", "correlate"}
    assert not (by_type["train_controlnet"] / "files" / "media" / "table").exists()

    tables = by_type["correlate"] / "files" / "media" / "table" / "correlate"
    for stem in ("table1_mIoU", "table1_mIoU_ci", "correlations"):
        (logged,) = [p for p in tables.iterdir() if re.fullmatch(rf"{stem}_\d+_[0-9a-f]+\.table\.json", p.name)]
        content = json.loads(logged.read_text())
        logged = pd.DataFrame(content["data"], columns=content["columns"])
        csv = pd.read_csv(tmp_path / "analysis" / f"{stem}.csv")  # empty cells read as NaN
        logged = logged.replace("", np.nan)
        assert list(logged.columns) == list(csv.columns), stem
        for column in csv.columns:
            if csv[column].dtype.kind == "f":
                np.testing.assert_allclose(logged[column].astype(float), csv[column], rtol=1e-12, err_msg=stem)
            else:
                assert logged[column].astype(str).tolist() == csv[column].astype(str).tolist(), (stem, column)
    assert list((by_type["correlate"] / "files" / "media" / "images").rglob("fig3_mIoU_sd15*.png"))
    assert pytest.importorskip("wandb").run is None


def test_a_stage_that_logs_nothing_itself_is_one_run_with_its_summary(compose_cfg, tmp_path, monkeypatch):
    """README, Logging: every stage that runs is one wandb run, also those without curves or tables (here
    demo_data): group = task, job_type = the stage, its scalar settings as config, its summary's numbers."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    demo = "stages.demo_data"
    summary = run_stages(compose_cfg("+stage=[demo_data]", "logger=wandb", "task_name=wandb_stages",
                                     f"{demo}.root={tmp_path}/data", f"{demo}.n_train=2", f"{demo}.n_val=3",
                                     f"{demo}.n_shift=1", f"{demo}.n_ood=1", "profile=tiny"))["demo_data"]
    (run,) = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    deadline = time.monotonic() + 600  # wandb's service process may still be writing the finished run's file
    records = list(wandb_records(next(run.glob("run-*.wandb"))))
    while not any(r.HasField("exit") for r in records):
        assert time.monotonic() < deadline, [r.WhichOneof("record_type") for r in records]
        time.sleep(0.2)
        records = list(wandb_records(next(run.glob("run-*.wandb"))))
    (record,) = [r.run for r in records if r.HasField("run")]
    assert (record.run_group, record.job_type, record.project) == ("wandb_stages", "demo_data", "synthrel")
    logged = {}
    for r in records:
        if r.HasField("history"):
            logged.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item})
    numbers = {f"demo_data/{k}": v for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool)}
    assert numbers and numbers.items() <= logged.items(), (numbers, logged)
    config = {}
    for r in records:
        if r.HasField("config"):
            config.update({item.key: json.loads(item.value_json) for item in r.config.update})
    assert config["n_train"] == 2 and config["root"] == f"{tmp_path}/data"
    assert pytest.importorskip("wandb").run is None
