from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from synthrel.tracking import Tracker


@pytest.fixture
def figure(tmp_path):
    path = tmp_path / "fig.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(path)
    return path


def _log_everything(tracker, figure):
    tracker.log_metrics({"correlate/mIoU/sd15/fog/pearson": 0.85, "skipped_nan": float("nan")})
    tracker.log_table("correlate/table1_mIoU", pd.DataFrame({"generator": ["sd15"], "fog": [0.85]}))
    tracker.log_figure("correlate/fig3", figure)


def test_csv_logger_writes_metrics_tables_and_figures(tmp_path, figure):
    cfg = {"csv": {"_target_": "pytorch_lightning.loggers.CSVLogger", "save_dir": str(tmp_path), "name": "csv"}}
    with Tracker.from_config(cfg, job_type="correlate") as tracker:
        _log_everything(tracker, figure)
    log_dir = Path(tracker.loggers[0].log_dir)
    metrics = pd.read_csv(log_dir / "metrics.csv")
    assert metrics["correlate/mIoU/sd15/fog/pearson"].iloc[0] == pytest.approx(0.85)
    assert "skipped_nan" not in metrics.columns
    assert pd.read_csv(log_dir / "tables" / "correlate__table1_mIoU.csv")["fog"].iloc[0] == pytest.approx(0.85)
    assert (log_dir / "figures" / "correlate__fig3.png").stat().st_size == figure.stat().st_size


def test_wandb_offline_writes_a_run_dir_and_finishes(tmp_path, figure, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    cfg = {"wandb": {"_target_": "pytorch_lightning.loggers.WandbLogger", "save_dir": str(tmp_path),
                     "project": "synthrel-test", "offline": True}}
    for _ in range(2):  # two "multirun jobs" in one process must give two runs, not one merged run
        with Tracker.from_config(cfg, job_type="correlate") as tracker:
            _log_everything(tracker, figure)
        assert wandb.run is None
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    assert all(list(run.glob("*.wandb")) for run in runs)
