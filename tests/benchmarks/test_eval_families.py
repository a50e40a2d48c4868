"""benchmarks/eval_families.py on CPU with a tiny model (eager): the per-(model, size) records that
benchmarks/budget.py reads, and the phase profile over PNG files (no timing is asserted)."""

import json

import pytest


def test_eval_families_tiny_smoke(tmp_path):
    from benchmarks.budget import family_runs
    from benchmarks.eval_families import main

    path = tmp_path / "eval_families_cpu.json"
    res = main(["--tiny", "--families", "PSPNet", "--sizes", "32x64:ood", "32x64", "--n-images", "8",
                "--profile-images", "4", "--json", str(path)])
    assert json.loads(path.read_text())["models"].keys() == {"pspnet_r18"}
    model = res["models"]["pspnet_r18"]
    assert model["family"] == "PSPNet" and list(model["sizes"]) == ["32x64:ood", "32x64"]
    for name, run in model["sizes"].items():
        assert (run["height"], run["width"], run["ood"]) == (32, 64, name.endswith(":ood"))
        # one loader batch of 4 before the steady window, two batches timed
        assert run["images"] == 8 and run["timed_images"] == 4
        # steady_s is rounded to the millisecond: on a fast CPU (36 ms) that alone moves 4 / steady_s by 1.4 %
        steady = run["steady_s"]
        assert 4 / (steady + 5e-4) - 1e-3 <= run["steady_img_s"] <= 4 / max(steady - 5e-4, 1e-9) + 1e-3
        assert 0 <= run["compile_s"] <= run["first_batch_s"]
    profile = res["profile"]["pspnet_r18"]
    assert profile["sets"].keys() == {"cityscapes", "ood_objects", "in_memory"}
    for name, entry in profile["sets"].items():
        run = entry["runs"][0]
        assert run["images"] == 4 and run["wall_ms_per_img"] > 0 and run["worker_read_ms_per_img"] >= 0
        assert run["worker_read_ms_per_img"] > 0 or name == "in_memory"  # PNG decoding takes time
        assert entry["per_sample_loader"]["img_s"] > 0
    ab = profile["pooling_ab_eager"]  # the tiny PSPNet's pyramid pooling, ATen's and rerouted: same logits
    assert ab["forward_ms_per_img_pooling_aten"] > 0 and ab["max_abs_logit_diff"] < 1e-4
    # the budget reads compiled, real-size runs only: not this tiny eager one
    assert family_runs(tmp_path) == ({}, None, None)


def test_sizes_parse_and_bad_sizes_are_refused():
    import argparse

    from benchmarks.eval_families import parse_size

    assert parse_size("1024x2048:ood") == (1024, 2048, True) and parse_size("512x512") == (512, 512, False)
    for bad in ("1024", "1024x2048:foo", "0x5", "axb"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected HxW or HxW:ood"):
            parse_size(bad)
