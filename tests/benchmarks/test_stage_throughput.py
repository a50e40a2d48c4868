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


def _fields(config) -> dict:
    """A config's fields (the backbone's included), without the bookkeeping that save_pretrained and
    from_pretrained add."""
    def strip(d):
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items()
                if k not in ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype")}

    return strip(config.to_dict())


def _shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_rba_benchmark_measures_the_stages_real_size_models(compose_cfg):
    """The RbA benchmark's Mask2Former of each stage is the model the ood_detection stage builds from its
    configured architecture (synthrel/conf/stage/ood_detection.yaml, rba.models.<stage>.arch): the same
    config, field by field, and the same parameters; RbA's released head, lighter than transformers' default."""
    import torch
    from transformers import Mask2FormerConfig

    from benchmarks.stage_throughput import RBA_HEADS, mask2former_config
    from synthrel.ood_detection.convert import build_model, rba_model_class

    models = compose_cfg("+stage=[ood_detection]").stages.ood_detection.rba.models
    assert sorted(models) == sorted(RBA_HEADS)
    for stage in models:
        arch = models[stage].arch  # the paper profile's: tiny and smoke override it with their own builds
        assert RBA_HEADS[stage] == arch
        with torch.device("meta"):
            ours = rba_model_class()(mask2former_config(stage, tiny=False))
            theirs = build_model(arch)  # what load_mask2former's checkpoint conversion builds
        assert _fields(ours.config) == _fields(theirs.config), stage
        assert _shapes(ours) == _shapes(theirs), stage
        decoder = ours.model.transformer_module.decoder
        assert len(decoder.layers) == len(theirs.model.transformer_module.decoder.layers)
        assert ours.config.decoder_layers < Mask2FormerConfig().decoder_layers  # not transformers' default head
        assert ours.model.pixel_level_module.decoder.num_feature_levels < 3


def test_rba_benchmark_tiny_is_the_tiny_profiles_model(tmp_path):
    """--tiny: the benchmark fine-tunes the tiny RbA that the tiny_models stage writes and the ood_detection
    stage loads (a detectron2 checkpoint + arch.json, converted), and records its head."""
    from benchmarks.stage_throughput import _mask2former_folder, main
    from synthrel.ood_detection.rba import load_mask2former
    from synthrel.tiny.mask2former import RBA_ARCH, RBA_CHECKPOINT, build_tiny_rba

    folder = build_tiny_rba(tmp_path / "rba_1dl")
    stage = load_mask2former({"checkpoint": str(folder / RBA_CHECKPOINT), "arch": str(folder / RBA_ARCH)})
    bench = load_mask2former(_mask2former_folder("rba_swin_b", True, tmp_path / "bench"))
    assert _fields(bench.config) == _fields(stage.config)
    assert _shapes(bench) == _shapes(stage)

    res = main(["--tiny", "--stages", "rba_swin_b", "--out", str(tmp_path / "out")])["rba_swin_b"]
    saved = json.loads((tmp_path / "out" / "throughput_rba_swin_b_cpu.json").read_text())
    assert "error" not in res and saved["settings"]["head"] == "tiny" and saved["per_s"] > 0
    assert saved["predict_img_s"] > 0


def test_busy_share_is_the_union_of_overlapping_kernels_within_the_window():
    """Against a brute force: the window cut into 1-unit cells, a cell busy when any interval covers it."""
    import random

    from benchmarks.stage_throughput import busy_share

    rng = random.Random(0)
    for _ in range(200):
        start, end = rng.randint(0, 20), rng.randint(21, 60)
        intervals = [(a, a + rng.randint(0, 15)) for a in (rng.randint(-10, 70) for _ in range(rng.randint(0, 8)))]
        cells = sum(any(a <= t and t + 1 <= b for a, b in intervals) for t in range(start, end))
        assert busy_share(intervals, start, end) == cells / (end - start)
    assert busy_share([], 0, 10) == 0.0


def test_controlnet_training_profile_runs_after_the_timed_steps(tmp_path, capsys):
    """--train-profile adds profiled optimizer steps after the timed ones and reports host ops (CPU: no GPU share);
    the timed rate is printed before the profile, so a run killed while processing it keeps the figure."""
    from benchmarks.stage_throughput import main

    res = main(["--tiny", "--stages", "controlnet_train_sd15", "--train-profile", "1", "--out", str(tmp_path)])
    run = res["controlnet_train_sd15"]
    assert f"before the profile: {{'steps_per_s': {run['steps_per_s']}, 'images_per_s': {run['per_s']}," \
        in capsys.readouterr().out
    assert "error" not in run and run["settings"]["timed_optimizer_steps"] == 2
    assert run["profile"]["optimizer_steps"] == 1 and run["profile"]["gpu_busy_share"] is None
    assert run["profile"]["top_host_self_ms"] and run["profile"]["wall_ms"] > 0
    assert any(" < " in key for key in run["profile"]["top_host_self_by_caller_ms"])


def test_the_profiles_count_kernels_not_the_annotation_spans_mirrored_on_the_gpu():
    """A compiled region's span covers its kernels and the gaps between them: counted, the GPU looks busier."""
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import FunctionEvent

    from benchmarks import device_kernels
    from benchmarks.stage_throughput import busy_share

    def event(i, name, start, end, device=DeviceType.CUDA, annotation=False):
        return FunctionEvent(id=i, name=name, thread=0, start_us=start, end_us=end, device_type=device,
                             is_user_annotation=annotation)

    timeline = [event(0, "Torch-Compiled Region: 0/0", 0, 30, annotation=True), event(1, "gemm", 0, 10),
                event(2, "Optimizer.step#AdamW.step", 0, 40, DeviceType.CPU, annotation=True),
                event(3, "aten::mm", 0, 5, DeviceType.CPU), event(4, "triton_poi_fused", 20, 30)]
    kernels = device_kernels(timeline)
    assert [e.name for e in kernels] == ["gemm", "triton_poi_fused"]
    assert busy_share([(e.time_range.start, e.time_range.end) for e in kernels], 0, 40) == 20 / 40


def test_host_self_time_is_told_apart_by_the_op_that_called_it():
    """Two cats, one from an autograd node and one under an annotation: each caller keeps its own host self time,
    an aten op between them is skipped, and a child's time is not counted in its parent's self time. A `.item()`'s
    stream synchronisation is a host wait; a queued copy is not."""
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import FunctionEvent

    from benchmarks.stage_throughput import host_self_by_caller, host_waits

    def event(i, name, start, end, parent=None):
        e = FunctionEvent(id=i, name=name, thread=0, start_us=start, end_us=end, device_type=DeviceType.CPU)
        if parent is not None:
            e.set_cpu_parent(parent)
            parent.append_cpu_child(e)
        return e

    step = event(0, "Optimizer.step#AdamW.step", 0, 10_000)
    split = event(1, "SplitBackward0", 100, 3_100, step)
    cat_backward = event(2, "aten::cat", 200, 3_000, split)  # 2.8 ms
    concat = event(3, "aten::concat", 4_000, 6_000, step)
    cat_forward = event(4, "aten::cat", 4_500, 5_500, concat)  # 1.0 ms under aten::concat's 2.0
    sync = event(5, "cudaStreamSynchronize", 7_000, 7_400, event(6, "aten::_local_scalar_dense", 6_900, 7_500,
                                                                 event(7, "aten::item", 6_800, 7_600, step)))
    memcpy = event(8, "cudaMemcpyAsync", 8_000, 8_100, step)  # queued: not a wait
    got = host_self_by_caller([step, split, cat_backward, concat, cat_forward])
    assert got["aten::cat < SplitBackward0"] == 2.8
    assert got["aten::cat < Optimizer.step#AdamW.step"] == 1.0
    assert got["aten::concat < Optimizer.step#AdamW.step"] == 1.0
    assert got["SplitBackward0 < Optimizer.step#AdamW.step"] == 0.2
    assert got["Optimizer.step#AdamW.step < (top level)"] == 4.1  # 10 ms less its children: 3 + 2 + 0.8 + 0.1
    assert host_waits([step, split, cat_backward, sync, memcpy]) == {
        "cudaStreamSynchronize < aten::_local_scalar_dense < Optimizer.step#AdamW.step": {"calls": 1, "ms": 0.4}}
