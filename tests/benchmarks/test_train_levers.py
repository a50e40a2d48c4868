"""benchmarks/train_levers.py (`throughput --levers`) on CPU with tiny models: the variants, what a lever that
cannot run reports, the JSON and the loss-curve check (no timing is asserted)."""

import json

import pytest
import torch

from benchmarks.train_levers import fastest, fp8_linears, parse_variant, restore, variant_order


def test_variants_parse_and_order():
    assert parse_variant("baseline") == frozenset()
    assert parse_variant("channels_last+sdpa_cudnn") == {"channels_last", "sdpa_cudnn"}
    assert parse_variant("compile+eager_vae+vae_fp32") == {"compile", "eager_vae", "vae_fp32"}
    for bad in ("warp_speed", "sdpa_flash+sdpa_cudnn", "compile+compile_reduce_overhead", "eager_vae",
                "compile_reduce_overhead+eager_vae"):
        with pytest.raises(SystemExit, match="--levers"):
            parse_variant(bad)
    # what changes the shared UNet for good (fp8 module swaps, compiled graphs) runs after the rest
    assert variant_order(["compile", "fp8_frozen_unet", "channels_last", "baseline", "channels_last"]) == [
        "baseline", "channels_last", "compile", "fp8_frozen_unet"]


def test_the_curve_takes_the_fastest_lever_that_ran():
    assert fastest({"baseline": {"images_per_s": 9.0}, "a": {"images_per_s": 2.0}, "b": {"images_per_s": 3.0},
                    "c": {"error": "out of memory"}}) == "b"
    assert fastest({"baseline": {"images_per_s": 9.0}, "c": {"skipped": "no torchao"}}) is None


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

    split = "split_micro_batch+no_checkpointing"
    res = main(["--levers", "no_checkpointing", "no_unet_checkpointing", split, "fp8_frozen_unet",
                "fp8_frozen_unet_fwd", "cudnn_benchmark", "--kind", "sd15", "--tiny", "--warmup-steps", "1", "--steps", "1",
                "--accumulate", "1", "--curve-steps", "2", "--curve-levers", "no_checkpointing", split,
                "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "train_levers_sd15_cpu.json").read_text())
    assert saved == json.loads(json.dumps(res))
    variants = res["variants"]
    assert list(variants) == ["baseline", "no_checkpointing", "no_unet_checkpointing", split, "cudnn_benchmark",
                              "fp8_frozen_unet", "fp8_frozen_unet_fwd"]
    assert variants["cudnn_benchmark"]["losses"] == variants["baseline"]["losses"]  # no cuDNN on the CPU
    assert torch.backends.cudnn.benchmark is False  # the lever's flag does not outlive its variant
    fp8 = variants["fp8_frozen_unet_fwd"]["losses"]  # fp8 forward on the CPU: rounding, not another curve
    assert fp8 == pytest.approx(variants["baseline"]["losses"], rel=0.05)
    assert "compute capability" in variants["fp8_frozen_unet"]["skipped"]  # a result, not a crash
    base, lever = variants["baseline"], variants["no_checkpointing"]
    assert len(base["losses"]) == 2 and base["images_per_s"] > 0 and lever["ratio"] > 0
    assert lever["losses"] == base["losses"] and lever["loss_vs_baseline"]["max_abs"] == 0  # fp32 recompute: exact
    assert variants["no_unet_checkpointing"]["losses"] == base["losses"]
    # halves of the same samples and draws, twice the accumulation: the same step up to fp32 summation order
    assert variants[split]["losses"] == pytest.approx(base["losses"], rel=1e-5)
    curve = res["curve"]
    assert list(curve) == ["baseline", "baseline_again", "no_checkpointing", split]
    for label in ("baseline_again", "no_checkpointing"):
        assert len(curve[label]["losses"]) == 2 and curve[label]["loss_vs_baseline"]["max_abs"] == 0
        assert curve[label]["weight_update_rel_l2_vs_baseline"] == 0
    assert curve[split]["losses"] == pytest.approx(curve["baseline"]["losses"], rel=1e-5)
    # AdamW divides by sqrt(v): where a gradient is near zero, summation-order rounding moves its update by up to
    # lr, so the update's distance depends on the CPU and its threads (3.9e-4 and 4.9e-4 on 1 and 2 threads of one
    # machine, below 1e-4 on another); other samples or draws would change the losses, checked above to 1e-5
    assert curve[split]["weight_update_rel_l2_vs_baseline"] < 1e-2


def test_a_curve_split_over_two_commands_compares_as_one(tmp_path):
    """The SDXL curve does not fit one 600 s device command: --curve-store keeps each run (losses and final
    weights), --curve-only trains some labels now; the second command compares its variant with the stored
    baselines, exactly as a curve run in one command does, and refuses a store trained with other settings."""
    from benchmarks.stage_throughput import main

    common = ["--levers", "--kind", "sd15", "--tiny", "--curve-steps", "2", "--curve-levers", "no_checkpointing",
              "--curve-store", str(tmp_path / "store")]
    first = main([*common, "--curve-only", "baseline", "baseline_again", "--out", str(tmp_path / "a")])
    assert first["variants"] == {} and "skipped" in first["curve"]["no_checkpointing"]
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["baseline.pt", "baseline_again.pt"]
    second = main([*common, "--curve-only", "no_checkpointing", "--out", str(tmp_path / "b")])["curve"]
    assert second["baseline"]["from_store"].endswith("baseline.pt") and "from_store" not in second["no_checkpointing"]
    whole = main(["--levers", "baseline", *common[1:-2], "--out", str(tmp_path / "c")])["curve"]
    for label in ("baseline_again", "no_checkpointing"):  # fp32 on the CPU: the same numbers as one command's
        assert second[label]["losses"] == whole[label]["losses"]
        assert second[label]["loss_vs_baseline"] == whole[label]["loss_vs_baseline"]
        assert second[label]["weight_update_rel_l2_vs_baseline"] == whole[label]["weight_update_rel_l2_vs_baseline"]
    with pytest.raises(SystemExit, match="--curve-store: .*baseline.pt was trained with"):
        main([*common[:4], "--curve-steps", "3", *common[6:], "--curve-only", "no_checkpointing"])


def test_frozen_fp8_linear_forward_within_fp8_rounding_and_backward_gives_only_the_input_gradient():
    """e4m3 keeps 3 mantissa bits: each product is within 2^-3 relative of x.w; the sum of K=64 terms with random
    signs stays within a few per cent of |x||w| (bound checked against the float64 product). The backward is
    the bf16 input gradient of a plain linear exactly, and the frozen weight gets none."""
    from benchmarks.train_levers import FrozenFp8Linear

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(4, 8, 64, dtype=torch.bfloat16, requires_grad=True)
    fp8 = FrozenFp8Linear(linear)
    y = fp8(x)
    exact = x.detach().double() @ linear.weight.double().T + linear.bias.double()
    scale = (x.detach().double().norm(dim=-1, keepdim=True) * linear.weight.double().norm(dim=-1)).clamp(min=1e-6)
    assert y.shape == (4, 8, 48) and y.dtype == torch.bfloat16
    assert ((y.double() - exact).abs() / scale).max() < 0.05
    grad = torch.randn_like(y)
    y.backward(grad)
    assert torch.equal(x.grad, grad @ linear.weight) and linear.weight.grad is None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 inputs (after a LayerNorm) run as bf16, as F.linear
        assert fp8(x.detach().float()).dtype == torch.bfloat16


def test_an_attention_lever_pins_the_unet_backend_but_leaves_the_vae_every_backend():
    """SDXL's VAE attends over 512 channels in one head, beyond flash's and cuDNN's limit: it keeps them all."""
    from torch.nn.attention import SDPBackend, _cur_sdpa_kernel_backends

    from benchmarks.train_levers import attention

    class Vae:
        def encode(self, x):
            return set(_cur_sdpa_kernel_backends())

    vae = Vae()
    with attention(frozenset({"sdpa_flash", "channels_last"}), vae):
        assert _cur_sdpa_kernel_backends() == [SDPBackend.FLASH_ATTENTION]
        assert {SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                SDPBackend.MATH} <= vae.encode(None)
    assert "encode" not in vars(vae)  # the class's method again
