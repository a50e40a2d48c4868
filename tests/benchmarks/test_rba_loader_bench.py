"""benchmarks/rba_loader.py runs the stage's own loader code and prints a ceiling per worker count (no timing
asserted: CI's box is loaded)."""

import pytest

from benchmarks.rba_loader import main


def test_rba_loader_benchmark_reports_ms_and_ceilings(capsys, tmp_path):
    res = main(["--samples", "3", "--images", "2", "--batch", "2", "--size", "64", "128", "--workers", "1", "2",
                "--gpu-step-s", "1.63", "--out", str(tmp_path)])
    assert res["samples"] == 3 and res["batch"] == 2
    assert res["sample_ms"] > 0 and res["read_ms"] > 0 and res["collate_ms"] >= 0
    one, two = res["ceiling_step_s"][1], res["ceiling_step_s"][2]
    assert two == pytest.approx(2 * one)  # workers scale the ceiling linearly, by construction
    assert "ms/sample" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # only a 1024x2048 run is written: the budget reads its cost as real-size
