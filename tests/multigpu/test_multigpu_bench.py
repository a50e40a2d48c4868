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
