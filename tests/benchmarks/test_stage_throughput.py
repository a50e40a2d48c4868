"""benchmarks/stage_throughput.py on CPU with tiny stand-ins: one JSON per stage, named with its card, in the
form benchmarks/budget.py reads (no timing is asserted)."""

import json


def test_card_slug():
    from benchmarks.stage_throughput import card_slug

    assert card_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert card_slug("NVIDIA H200") == "h200"
    assert card_slug("cpu") == "cpu"


def test_stage_throughput_tiny_smoke(tmp_path):
    from benchmarks.budget import throughput
    from benchmarks.stage_throughput import main

    res = main(["--tiny", "--stages", "fid_features", "calibrate", "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["throughput_calibrate_cpu.json",
                                                           "throughput_fid_features_cpu.json"]
    for stage in ("fid_features", "calibrate"):
        saved = json.loads((tmp_path / f"throughput_{stage}_cpu.json").read_text())
        assert saved == json.loads(json.dumps(res[stage]))
        assert "error" not in saved and saved["per_s"] > 0 and saved["device"] == "cpu" and saved["tiny"]
    assert res["calibrate"]["per_class_fit_s"] > 0 and res["fid_features"]["resize_s_per_batch"] > 0
    assert throughput(tmp_path, "calibrate") is None  # tiny runs never enter the budget
