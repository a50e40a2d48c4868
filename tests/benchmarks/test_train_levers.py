"""benchmarks/train_levers.py (`throughput --levers`) on CPU with tiny models: the variants, what a lever that
cannot run reports, the JSON and the loss-curve check (no timing is asserted)."""

import json

import pytest
import torch

from benchmarks.train_levers import fp8_linears, parse_variant, restore, variant_order


def test_variants_parse_and_order():
    assert parse_variant("baseline") == frozenset()
    assert parse_variant("channels_last+sdpa_cudnn") == {"channels_last", "sdpa_cudnn"}
    for bad in ("warp_speed", "sdpa_flash+sdpa_cudnn", "compile+compile_reduce_overhead"):
        with pytest.raises(SystemExit, match="--levers"):
            parse_variant(bad)
    # what changes the shared UNet for good (fp8 module swaps, compiled graphs) runs after the rest
    assert variant_order(["compile", "fp8_frozen_unet", "channels_last", "baseline", "channels_last"]) == [
        "baseline", "channels_last", "compile", "fp8_frozen_unet"]


def test_fp8_takes_the_transformer_linears_but_not_the_text_context_projections_and_restores():
    from synthrel.tiny.diffusion import _unet

    unet = _unet("sdxl", "tiny")  # the real SDXL UNet's module names, at tiny widths
    picked = fp8_linears(unet)
    assert picked and all(".transformer_blocks." in name for name in picked)
    assert not any(name.endswith(("attn2.to_k", "attn2.to_v")) for name in picked)
    assert any(name.endswith("attn2.to_q") for name in picked) and any(name.endswith("ff.net.2") for name in picked)
    swapped = {name: torch.nn.Identity() for name in picked}
    restore(unet, swapped)
    assert all(isinstance(unet.get_submodule(name), torch.nn.Identity) for name in picked)
    restore(unet, picked)
    assert all(unet.get_submodule(name) is module for name, module in picked.items())


def test_lever_sweep_and_curve_tiny_smoke(tmp_path):
    from benchmarks.stage_throughput import main

    res = main(["--levers", "no_checkpointing", "fp8_frozen_unet", "--kind", "sd15", "--tiny", "--warmup-steps", "1",
                "--steps", "1", "--accumulate", "1", "--curve-steps", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "train_levers_sd15_cpu.json").read_text())
    assert saved == json.loads(json.dumps(res))
    variants = res["variants"]
    assert list(variants) == ["baseline", "no_checkpointing", "fp8_frozen_unet"]
    assert "compute capability" in variants["fp8_frozen_unet"]["skipped"]  # a result, not a crash
    base, lever = variants["baseline"], variants["no_checkpointing"]
    assert len(base["losses"]) == 2 and base["images_per_s"] > 0 and lever["ratio"] > 0
    assert lever["losses"] == base["losses"] and lever["loss_vs_baseline"]["max_abs"] == 0  # fp32 recompute: exact
    curve = res["curve"]  # best: the sweep's fastest lever that ran
    assert list(curve) == ["baseline", "baseline_again", "no_checkpointing"]
    for label in ("baseline_again", "no_checkpointing"):
        assert len(curve[label]["losses"]) == 2 and curve[label]["loss_vs_baseline"]["max_abs"] == 0
        assert curve[label]["weight_update_rel_l2_vs_baseline"] == 0
