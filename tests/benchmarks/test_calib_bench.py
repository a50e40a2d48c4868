"""`python -m benchmarks.run calib --tiny`: the CPU smoke test of the ECE sweep against its previous version."""

import json

from benchmarks import run


def test_calib_bench_tiny_matches_baseline(tmp_path):
    out = tmp_path / "calib.json"
    result = run.main(["calib", "--tiny", "--json", str(out)])["calib"]
    assert result["max_abs_diff"] < 1e-12
    assert json.loads(out.read_text())["pixels"] == 20_000
