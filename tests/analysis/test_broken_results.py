"""correlate over broken results (issue #35 item 5), through the CLI: a truncated table is an error naming the
file and how to repair it; results whose model names do not meet stop with both sides named, and write nothing:
the tables, figures and index of the last good run stay as they were (outputs are published together)."""

import os
import subprocess
import sys
from pathlib import Path

from analysis_zoo import make_zoo, write_zoo

REPO = Path(__file__).resolve().parents[2]


def _correlate(tmp_path: Path, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synthrel.run", "+stage=[correlate]", "profile=tiny", "task_name=corr",
         f"paths.root_dir={tmp_path}", f"paths.artifacts_dir={tmp_path}/artifacts", f"paths.log_dir={tmp_path}/logs",
         f"stages.correlate.results_root={root}", "stages.correlate.domains=[fog]", "stages.correlate.metrics=[mIoU]",
         "stages.correlate.ablation.sizes=[]", "stages.correlate.bootstrap.n_resamples=20",
         "stages.correlate.calibration_root=null", "preflight=false",
         "real_split=all"],  # analysis_zoo names the real sets as whole sets (acdc_fog)
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"})


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def test_correlate_over_a_truncated_table_names_the_file_and_the_repair(tmp_path):
    root = write_zoo(make_zoo(n_models=4, domains=("fog",)), tmp_path / "results" / "tiny")
    bad = root / "fam1-m1" / "acdc_fog" / "metrics.parquet"
    bad.write_bytes(bad.read_bytes()[:150])
    proc = _correlate(tmp_path, root)
    assert proc.returncode != 0
    assert f"{bad.resolve()}: cannot be read as a results table (a parquet table)" in proc.stderr
    assert "Run the stage that wrote it again" in proc.stderr
    assert _outputs(tmp_path / "artifacts" / "analysis" / "corr") == {}


def test_correlate_with_other_model_names_stops_naming_both_sides_and_writes_nothing(tmp_path):
    zoo = make_zoo(n_models=4, domains=("fog",))
    root = write_zoo(zoo, tmp_path / "results" / "tiny")
    good = _correlate(tmp_path, root)
    assert good.returncode == 0, good.stderr[-3000:]
    out = tmp_path / "artifacts" / "analysis" / "corr"
    before = _outputs(out)
    assert "outputs.json" in before and "table1_mIoU.csv" in before and any(k.startswith("fig3_") for k in before)

    renamed = zoo.copy()
    sd15 = renamed["generator"] == "sd15"
    renamed.loc[sd15, "model"] = "other-" + renamed.loc[sd15, "model"]  # another zoo's names for every sd15 row
    other = write_zoo(renamed, tmp_path / "results2" / "tiny")
    proc = _correlate(tmp_path, other)
    assert proc.returncode != 0
    message = proc.stderr
    assert "correlate: no model has mIoU results both on sd15 and on the real sets of ['fog']" in message
    assert "'other-fam0-m0'" in message and "'fam0-m0'" in message and "The model names must match" in message
    assert "ValueError" not in message
    assert _outputs(out) == before, "a failed correlate changed the outputs of the last good run"
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]
