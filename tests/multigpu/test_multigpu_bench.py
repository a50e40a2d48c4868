"""benchmarks/multigpu.py in its --tiny --cpu mode: both parts run as separate CPU processes (DDP over gloo,
two generation shards) and their checks hold when recomputed here from the files they wrote."""

import json

import pytest
import torch
from safetensors.torch import load_file


@pytest.mark.slow
def test_tiny_cpu_benchmark_trains_and_generates_on_two_processes(tmp_path):
    from benchmarks.multigpu import main

    result = main(["all", "--tiny", "--cpu", "--workdir", str(tmp_path), "--json", str(tmp_path / "multigpu.json")])
    assert json.loads((tmp_path / "multigpu.json").read_text())["total_s"] == result["total_s"]
    runs = tmp_path / "runs" / "tiny"

    train = result["train"]
    assert (train["one_device"]["devices"], train["two_devices"]["devices"]) == (1, 2)
    assert train["one_device"]["global_batch"] == train["two_devices"]["global_batch"] == 4
    assert train["one_device"]["steps"] == train["two_devices"]["steps"] == 4
    assert train["one_device"]["images_per_s"] > 0 and train["scaling"] > 0
    one, two, initial = (load_file(runs / f"weights_{n}.safetensors") for n in ("one_device", "two_devices", "initial"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5, msg=key)
    assert max(float((one[k] - initial[k]).abs().max()) for k in one) > 1e-4  # the weights did move
    assert train["parity"]["ok"] and train["parity"]["max_abs_diff"] <= 1e-5

    gen = result["generate"]
    assert gen["union"]["ok"] and gen["ratio"] > 0
    whole, sharded = runs / "gen_one_device" / "fog", runs / "gen_two_devices" / "fog"
    pngs = {folder: {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.png")} for folder in (whole, sharded)}
    assert len(pngs[whole]) == 4 * 4 and pngs[whole] == pngs[sharded]
    assert sorted(result["phases_s"]) == sorted(["prepare", "train_one_device", "train_two_devices",
                                                  "generate_one_device", "generate_two_devices"])


def test_tiny_cpu_zoo_sweep_on_two_shards_equals_the_one_process_sweep(tmp_path):
    """`evaluate --tiny --cpu`: shard 0/1 in one process, shards 0/2 + 1/2 in two; the union check passes, agrees
    with the files, and fails when a sharded result differs or is missing."""
    import numpy as np

    from benchmarks.multigpu import compare_results, main

    result = main(["evaluate", "--tiny", "--cpu", "--workdir", str(tmp_path), "--json", str(tmp_path / "multigpu.json")])
    written = json.loads((tmp_path / "multigpu.json").read_text())
    assert written["total_s"] == result["total_s"]
    ev = written["evaluate"]
    assert {"settings", "one_device", "two_devices", "ratio", "ratio_with_start", "union"} <= set(ev)
    assert sorted(written["phases_s"]) == ["evaluate_one_device", "evaluate_two_devices", "prepare_evaluate"]
    settings = ev["settings"]
    assert settings["models"] == ["segformer_b0", "dlv3p_r18", "pspnet_r18"] and settings["pairs"] == 6
    assert settings["stage"]["precision"] == "fp32" and settings["seeds"] == {"weights": 0, "data": 0}

    one, two = ev["one_device"], ev["two_devices"]
    assert [s["shard"] for s in one["shards"]] == ["0/1"] and [s["shard"] for s in two["shards"]] == ["0/2", "1/2"]
    assert all(s["card"] == "cpu" for s in one["shards"] + two["shards"])
    halves = [set(s["pairs"]) for s in two["shards"]]
    assert len(halves[0]) == len(halves[1]) == 3 and not halves[0] & halves[1]
    assert halves[0] | halves[1] == set(one["shards"][0]["pairs"])
    assert one["images"] == two["images"] == 6 * 4 and one["images_per_s"] > 0 and two["images_per_s"] > 0
    assert ev["ratio"] == round(two["images_per_s"] / one["images_per_s"], 3)

    union = ev["union"]
    assert union["ok"] and union["same_pairs"] and union["pairs"] == 6 and union["identical_pairs"] == 6
    assert union["changed_pixel_fraction"] == 0 and union["max_metric_diff"] == 0 and union["manifest_lines"] == 6
    single, sharded = (tmp_path / "runs" / "tiny" / f"eval_{n}" / "results" / "multigpu" for n in ("one_device",
                                                                                                    "two_devices"))
    confusion = {root: {p.relative_to(root): p.read_bytes() for p in root.glob("*/*/confusion.npy")}
                 for root in (single, sharded)}
    assert len(confusion[single]) == 6 and confusion[single] == confusion[sharded]

    pair = sorted(halves[1])[0]
    cm = np.load(sharded / pair / "confusion.npy")
    cm[0, 0] -= 1
    cm[0, 1] += 1  # one pixel of class 0 predicted as class 1
    np.save(sharded / pair / "confusion.npy", cm)
    (sharded / sorted(halves[0])[0] / "DONE").unlink()
    broken = compare_results(single, sharded)
    assert not broken["same_pairs"] and broken["pairs"] == 6
    assert broken["confusion_abs_diff"] == 2 and broken["changed_pixel_fraction"] > 0
