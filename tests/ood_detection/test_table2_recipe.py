"""experiments/table2.sh exactly as written, PROFILE=tiny, from an empty folder after the README's tiny set-up
(`make test-full`, about 2 minutes on one CPU): every row of Table 2 in the table, with the "not run" cells of what
the demo data lacks (COCO, SMIYC, Fishyscapes)."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline", "TQDM_DISABLE": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "PYTHON": sys.executable,
       "PROFILE": "tiny"}


def _run(argv, cwd):
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=1800, env={**os.environ, **ENV})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.mark.full
def test_table2_recipe_on_tiny(tmp_path):
    _run([sys.executable, "-m", "synthrel.run", "profile=tiny", "+stage=[tiny_models,demo_data,train_zoo]"], tmp_path)
    _run(["bash", str(REPO / "experiments" / "table2.sh")], tmp_path)
    analysis = tmp_path / "outputs/tiny/artifacts/analysis/table2_rba"
    table = pd.read_csv(analysis / "table2.csv", index_col=0)
    rows = [f"RbA ({b}){s}" for b in ("Swin-B", "Swin-L")
            for s in (", no OE", " + COCO data", " + Ours (curated)", " + Ours (all)")]
    assert sorted(table.index) == sorted(rows)
    for row in rows:
        for metric in ("AUROC", "AP", "FPR95"):
            cell = table.loc[row, f"road_anomaly {metric}"]
            if "COCO" in row:
                assert cell == "not run: COCO not given"
            else:
                assert 0 <= float(cell) <= 100
            for absent in ("smiyc_ra21", "smiyc_ro21", "fs_lost_and_found"):
                assert table.loc[row, f"{absent} {metric}"].startswith("not run: ")
    assert float(table.loc["RbA (Swin-B), no OE", "paper AP"]) == 78.4
    assert "Table 2" in (analysis / "report.md").read_text()
    curated = (tmp_path / "outputs/tiny/artifacts/ood_objects/paper42/curated.txt").read_text()
    assert len([line for line in curated.splitlines() if not line.startswith("#")]) >= 1
    finetuned = tmp_path / "outputs/tiny/artifacts/ood_detection/tiny/rba_finetuned"
    assert {p.name for p in finetuned.iterdir() if not p.name.startswith(".")} >= {
        f"rba_swin_{b}+synthetic_{v}-s0" for b in "bl" for v in ("all", "curated")}
