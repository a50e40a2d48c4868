"""benchmarks/ood_bench.py runs on the CPU: the pooled counts agree with sklearn on the pixels they saw, and the
pass-vs-logits comparison reports a share in [0, 1] (tiny model, slow)."""

import json

import pytest

from benchmarks import ood_memory
from benchmarks.ood_bench import main


def test_pooled_bench_small_agrees_with_sklearn(tmp_path):
    path = tmp_path / "ood.json"
    res = main(["pooled", "--device", "cpu", "--pixels", "100000", "--batch-pixels", "30000",
                "--scores", "msp", "max_logit", "--check-pixels", "100000", "--json", str(path)])
    assert json.loads(path.read_text()) == res
    for entry in res["pooled"]["scores"].values():
        assert entry["check_pixels"] == 100_000 and entry["check_max_abs_diff_vs_sklearn"] < 1e-9
        assert 0 < entry["distinct_values"] <= 100_000


@pytest.mark.slow
def test_pass_bench_tiny_quick(tmp_path):
    res = main(["--tiny", "--quick", "--json", str(tmp_path / "ood.json")])["pass"]
    assert 0 <= res["ood_accumulation_share_of_pass"] <= 1 and res["pass_img_s"] > 0
    assert res["logits_only_img_s"] > 0 and res["ood_update_ms_per_img"] > 0


@pytest.mark.slow  # three fresh processes importing torch and sklearn
def test_memory_bench_small_agrees_with_sklearn(tmp_path):
    """benchmarks/ood_memory.py: each method in its own process on the same scores, peaks and metrics reported."""
    res = ood_memory.main(["--pixels", "20000", "--batches", "3", "--json", str(tmp_path / "mem.json")])
    assert json.loads((tmp_path / "mem.json").read_text()) == res
    assert set(res["methods"]) == {"sklearn", "synthrel", "synthrel_batched"}
    for method in ("synthrel", "synthrel_batched"):
        entry = res["methods"][method]
        assert entry["max_abs_diff_vs_sklearn"] < 1e-12 and entry["peak_above_mib"] >= 0
    assert 0 < res["methods"]["synthrel_batched"]["distinct_values"] <= res["counted_pixels"]
