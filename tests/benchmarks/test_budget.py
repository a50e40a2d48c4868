"""benchmarks/budget.py on small JSON fixtures: the arithmetic of the table, checked by hand (hours = units /
rate / 3600; 8 GPUs: sharded / 8, independent runs one per GPU, DDP at the measured 2-GPU efficiency), the
"not measured" rows, the totals, the target and the dominant stage."""

import json

import pytest

H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
#: one whole-mode model at test scale (2048, 1024) (its mmseg config's), so the processed pixels per image are known by hand
ZOO = """name: one
models:
  bisenetv1_r50:
    family: BiSeNetV1
    framework: mmseg
    config: bisenetv1/bisenetv1_r50-d32-in1k-pre_4xb4-160k_cityscapes-1024x1024.py
    checkpoint: null
"""
RATES = {"caption": 5.0, "controlnet_train_sd15": 30.0, "controlnet_train_sdxl": 4.0, "grounded_sam": 2.0,
         "rba_swin_b": 1.0, "rba_swin_l": 0.5, "calibrate": 0.1, "fid_features": 100.0}
PREDICT = {"rba_swin_b": 8.0, "rba_swin_l": 4.0}
SCALING = 1.6
ZOO_SECONDS, ZOO_IMAGES = 25.6, 512  # 0.05 s per 512x512 image


#: flops.json: TFLOP per unit (made-up round numbers; the counting itself is checked on a conv and a linear layer)
FLOPS = {"sd15": {"train_image": 3.0, "generate_image": 50.0}, "sdxl": {"train_image": 25.0, "generate_image": 500.0},
         "inpaint": {"inpaint": 80.0, "refine": 55.0}, "caption": {"image": 0.6}, "grounded_sam": {"image": 6.0},
         "fid": {"image": 0.01},
         # RbA by head: the released one (the benchmark's) and transformers' default (the JSONs without a head)
         "rba": {"swin_b": {"swin_b_1dl": {"train_step": 7.2, "predict_image": 1.5},
                            "transformers_default": {"train_step": 9.0, "predict_image": 2.0, "encoder_layers": 6,
                                                     "decoder_layers": 10}},
                 "swin_l": {"swin_l_1dl": {"train_step": 12.0, "predict_image": 3.0},
                            "transformers_default": {"train_step": 16.0, "predict_image": 4.0, "encoder_layers": 6,
                                                     "decoder_layers": 10}}},
         "evaluate": {"bisenetv1_r50": {"512x512": 0.8, "1024x1024": 0.8, "1024x2048": 1.6, "1080x1920": 1.4,
                                        "720x1280": 1.4}}}
PEAK = 989.0


#: the inpainting benchmark's batch-1 calls: eager (the diffusers pipeline) and compiled img/s, compiled warm-up s
INPAINT_CALLS = {"inpaint": (0.5, 2.0, 90.0), "refine": (1.0, 3.0, 0.0)}


def write_fixtures(folder, skip=(), flops=None, settings=None, inpaint_calls=None):
    """`settings`: stage -> the throughput JSON's settings (none by default, as the JSONs measured before #36);
    `inpaint_calls`: INPAINT_CALLS' form."""
    def put(name, data):
        (folder / name).write_text(json.dumps(data))

    if "flops" not in skip:
        put("flops.json", FLOPS if flops is None else flops)

    for stage, rate in RATES.items():
        if stage not in skip:
            put(f"throughput_{stage}_h100.json", {"stage": stage, "device": H100, "tiny": False, "per_s": rate,
                                                  **({"predict_img_s": PREDICT[stage]} if stage in PREDICT else {}),
                                                  **({"settings": settings[stage]} if stage in (settings or {}) else {})})
    put("throughput_caption_cpu.json", {"device": "cpu", "tiny": True, "per_s": 1e6})  # tiny runs are ignored
    rows = lambda batch, rate: [{"batch": batch, "synthrel": {"img_per_s": rate}}]  # noqa: E731
    put("gen_bench_sd15_final_h100.json", {"device": H100, "models": [{"size": 512, "steps": 25, "rows": rows(8, 6.0)}]})
    put("gen_bench_sdxl_compile_vae_h100.json", {"device": H100, "models": [{"size": 1024, "steps": 25,
                                                                              "rows": rows(8, 0.8)}]})
    put("gen_bench_inpaint_h200.json", {"device": H200, "models": [{
        "size": 512, "compile": "reduce-overhead", "calls": {"inpaint": [1.0, 7.5, 50], "refine": [0.5, 7.5, 50]},
        "rows": [{"batch": 1, "call": call, "eager": {"img_per_s": eager},
                  "synthrel": {"img_per_s": compiled, "warmup_extra_s": warmup}}
                 for call, (eager, compiled, warmup) in (inpaint_calls or INPAINT_CALLS).items()]}]})
    put("multigpu_h200x2_run1.json", {"devices": [H200, H200], "args": {"resolution": 512, "gradient_checkpointing": False},
                                      "train": {"scaling": SCALING, "one_device": {
        "images_per_s": 99.0, "batch": 8, "accumulate": 2, "precision": "bf16-mixed"}}})
    put("eval_zoo_run_512_h200.json", {"zoo_run": {"zoo_images": ZOO_IMAGES, "precision": "bf16", "batch_size": 8,
                                                   "models": {"bisenetv1_r50": {"seconds": ZOO_SECONDS}}}})


def run_budget(tmp_path, skip=(), flops=None, settings=None, inpaint_calls=None):
    from benchmarks.budget import main

    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    write_fixtures(results, skip, flops, settings, inpaint_calls)
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(ZOO)
    res = main(["--results", str(results), "--zoo", str(zoo), "--json", str(tmp_path / "budget.json")])
    assert json.loads((tmp_path / "budget.json").read_text())["summary"] == res["summary"]
    return res, {r["stage"]: r for r in res["rows"]}


def test_budget_arithmetic_by_hand(tmp_path):
    res, rows = run_budget(tmp_path)

    def check(stage, hours_1, hours_8, card=H100):
        row = rows[stage]
        assert row["hours_1"] == pytest.approx(hours_1, rel=1e-9), stage
        assert row["wall_8_h"] == pytest.approx(hours_8, rel=1e-9), stage
        assert card in row["measured"]["card"]

    h = 1 / 3600
    check("caption", (2975 + 500) / 5.0 * h, (2975 + 500) / 5.0 * h / 8)
    efficiency = SCALING / 2  # per GPU, measured on 2 GPUs, applied to 8
    check("train_controlnet SD1.5", 2100 * 8 * 32 / 30.0 * h, 2100 * 8 * 32 / 30.0 * h / (8 * efficiency))
    check("train_controlnet SDXL", 27500 * 8 * 4 / 4.0 * h, 27500 * 8 * 4 / 4.0 * h / (8 * efficiency))
    sd15_images = 5 * 512 + 28 * 64 + 27 * 64
    check("generate SD1.5", sd15_images / 6.0 * h, sd15_images / 6.0 * h / 8)
    check("generate SDXL", 5 * 512 / 0.8 * h, 5 * 512 / 0.8 * h / 8)
    # inpainting: compiled (2688 items per shard save 2688 x (1/0.5 - 1/2) s > 90 s), the inpainting call pays the
    # 90 s compile once per process; the refinement call reuses its UNet
    check("inpaint", 42 * 512 / 2.0 * h + 90 * h, 42 * 512 / 2.0 * h / 8 + 90 * h, H200)
    check("inpaint: refine", 42 * 512 / 3.0 * h, 42 * 512 / 3.0 * h / 8, H200)
    check("inpaint: Grounded-SAM", 42 * 512 / 2.0 * h, 42 * 512 / 2.0 * h / 8)
    # RbA: 3 runs of 5000 steps per backbone, one run per GPU: the node's wall time is one run
    check("ood_detection: RbA Swin-B fine-tunes", 3 * 5000 / 1.0 * h, 5000 / 1.0 * h)
    check("ood_detection: RbA Swin-L fine-tunes", 3 * 5000 / 0.5 * h, 5000 / 0.5 * h)
    ood_images = 42 * 512 + 60 + 10 + 30 + 100
    check("ood_detection: RbA Swin-B scoring", 4 * ood_images / 8.0 * h, 4 * ood_images / 8.0 * h / 8)
    # calibration: a fit of the measured 512-image set takes 1 / 0.1 s; other sets in proportion to their images
    sets = [512] * 10 + [500, 28 * 64, 27 * 64]
    check("calibrate", sum(k / 512 for k in sets) / 0.1 * h, sum(k / 512 for k in sets) / 0.1 * h / 8)
    fid_images = 3 * (4 * (512 + 400) + (512 + 981))
    check("fid", fid_images / 100.0 * h, fid_images / 100.0 * h / 8)
    # evaluate: 0.05 s per 512x512 image, which the model resizes to 1024x1024 (its test scale); 1024x2048
    # stays (2x the pixels), 1080x1920 and 720x1280 become 1820x1024 (1.7773x), 1024x1024 stays (1x)
    per_image = ZOO_SECONDS / ZOO_IMAGES
    wide = 1820 * 1024 / (1024 * 1024)
    images_at = {2.0: 500 + 42 * 512 + 100, wide: 4 * 400 + 981 + 60 + 10 + 30, 1.0: 5 * 512 + 5 * 512 + 28 * 64 + 27 * 64}
    evaluate = sum(ratio * k * per_image for ratio, k in images_at.items()) * h
    check("evaluate", evaluate, evaluate / 8, H200)

    summary = res["summary"]
    total_1 = sum(r["hours_1"] for r in rows.values())
    # the 6 fine-tune runs share the 8 GPUs: the node waits for the longest (Swin-L), not for both rows in turn
    fine_tunes = [k for k in rows if k.endswith("fine-tunes")]
    total_8 = sum(r["wall_8_h"] for k, r in rows.items() if k not in fine_tunes) + 5000 / 0.5 * h
    assert summary["runs_wall_hours_8"] == pytest.approx(5000 / 0.5 * h, abs=0.01)
    assert summary["total_gpu_hours_1"] == pytest.approx(total_1, abs=0.01)
    assert summary["total_wall_hours_8"] == pytest.approx(total_8, abs=0.01)
    assert summary["complete"] and summary["not_measured"] == []
    assert summary["target_met"] is (total_8 <= 2.0)
    dominant = max(rows.values(), key=lambda r: r["wall_8_h"])
    assert summary["dominant_stage"] == dominant["stage"] == "train_controlnet SDXL"
    assert summary["dominant_share_8"] == pytest.approx(dominant["wall_8_h"] / total_8, abs=1e-3)


def test_budget_marks_stages_without_a_measurement(tmp_path, capsys):
    res, rows = run_budget(tmp_path, skip=("controlnet_train_sd15", "controlnet_train_sdxl", "grounded_sam"))
    # SD1.5 training falls back to the multigpu run; SDXL has no other measurement
    assert rows["train_controlnet SD1.5"]["measured"]["source"] == "multigpu_h200x2_run1.json"
    assert rows["train_controlnet SD1.5"]["hours_1"] == pytest.approx(2100 * 8 * 32 / 99.0 / 3600)
    for stage in ("train_controlnet SDXL", "inpaint: Grounded-SAM"):
        assert rows[stage]["hours_1"] is None and rows[stage]["wall_8_h"] is None and rows[stage]["measured"] is None
    summary = res["summary"]
    assert set(summary["not_measured"]) == {"train_controlnet SDXL", "inpaint: Grounded-SAM"}
    assert not summary["complete"]
    assert summary["total_gpu_hours_1"] == pytest.approx(sum(r["hours_1"] or 0 for r in rows.values()), abs=0.01)
    out = capsys.readouterr().out
    assert "not measured: train_controlnet SDXL, inpaint: Grounded-SAM" in out and "lower bound" in out


def test_totals_are_sums_of_the_rows(tmp_path, capsys):
    res, rows = run_budget(tmp_path)
    totals, h = res["totals"], 1 / 3600
    fine_tunes = [k for k in rows if k.endswith("fine-tunes")]
    longest_run = 5000 / 0.5 * h  # Swin-L's run: the six runs share the node

    def by_hand(stages):
        hours_1 = sum(rows[k]["hours_1"] for k in stages)
        wall_8 = sum(rows[k]["wall_8_h"] for k in stages if k not in fine_tunes) + longest_run
        return hours_1, wall_8

    paper_1, paper_8 = by_hand(list(rows))
    assert totals["paper"]["hours_1"] == pytest.approx(paper_1, abs=0.01)
    assert totals["paper"]["wall_hours_8"] == pytest.approx(paper_8, abs=0.01)
    # the released SD1.5 ControlNet saves exactly the SD1.5 training row (SDXL is still trained)
    released = [k for k in rows if k != "train_controlnet SD1.5"]
    assert "train_controlnet SD1.5" not in totals["paper_released_controlnet"]["stages"]
    assert "train_controlnet SDXL" in totals["paper_released_controlnet"]["stages"]
    rel_1, rel_8 = by_hand(released)
    assert totals["paper_released_controlnet"]["hours_1"] == pytest.approx(rel_1, abs=0.01)
    assert totals["paper_released_controlnet"]["wall_hours_8"] == pytest.approx(rel_8, abs=0.01)
    assert paper_1 - rel_1 == pytest.approx(2100 * 8 * 32 / 30.0 * h, abs=0.02)
    assert totals["paper_released_controlnet"]["times_target"] == pytest.approx(rel_8 / 6.0, abs=0.01)
    # the ideal of a total is the sum of its counted rows' FLOPs at the peak
    counted = [r for r in rows.values() if r["tflop"] is not None]
    assert totals["paper"]["ideal_hours_1"] == pytest.approx(sum(r["tflop"] for r in counted) / PEAK * h, abs=1e-3)
    out = capsys.readouterr().out
    assert "total, the paper with the released SD1.5 ControlNet" in out and "MFU" in out


def test_forecast_counts_one_model_on_the_six_sets(tmp_path):
    res, rows = run_budget(tmp_path)
    f, h = res["forecast_row"], 1 / 3600
    # 5 synthetic SD1.5 sets of 512 images at 512x512 (resized to the model's 1024x1024: the measured cost) and
    # the 42 x 512 inpainted OOD images at 1024x2048 (2x the pixels); no real set, no other model
    per_image = ZOO_SECONDS / ZOO_IMAGES
    assert f["units"] == 5 * 512 + 42 * 512
    assert f["hours_1"] == pytest.approx((5 * 512 * per_image + 42 * 512 * 2 * per_image) * h, rel=1e-9)
    assert f["tflop"] == pytest.approx(5 * 512 * 0.8 + 42 * 512 * 1.6, rel=1e-9)
    t = res["totals"]["forecast"]
    assert t["stages"] == ["forecast: evaluate one model"]
    assert t["hours_1"] == pytest.approx(f["hours_1"], abs=0.01) and t["target_gpus"] == 1
    # 8 GPUs: evaluate deals out whole (model, set) pairs; the OOD set's pair is the longest
    assert f["wall_8_h"] == pytest.approx(42 * 512 * 2 * per_image * h, rel=1e-9)
    assert t["wall_hours_8"] == pytest.approx(f["wall_8_h"], abs=0.01)
    # against the unrounded hours: a total that rounds to the target is not within it
    assert t["times_target"] == pytest.approx(f["hours_1"] / 0.25, abs=1e-3)
    assert t["target_met"] is (f["hours_1"] <= 0.25)


def test_a_total_that_rounds_to_its_target_is_not_met():
    from benchmarks.budget import Row, totals

    forecast = Row("forecast: evaluate one model", "work", 1, "image", None, "pairs")
    forecast.seconds_1, forecast.pair_hours = 0.2514 * 3600, [0.2514]
    t = totals([], forecast, None)["forecast"]
    assert t["hours_1"] == 0.25 and t["times_target"] == pytest.approx(1.006) and t["target_met"] is False


def test_inpaint_rows_run_as_the_stages_compile_auto_decides(tmp_path):
    """A compile that one shard's 2688 items do not pay back (2688 x 1.5 s = 4032 s <= 5000 s): both calls at
    their eager rates, no compile; without the eager side in the JSON, the compiled rates as measured."""
    h = 1 / 3600
    _, rows = run_budget(tmp_path, inpaint_calls={"inpaint": (0.5, 2.0, 5000.0), "refine": (1.0, 3.0, 0.0)})
    assert rows["inpaint"]["hours_1"] == pytest.approx(42 * 512 / 0.5 * h, rel=1e-9)
    assert rows["inpaint: refine"]["hours_1"] == pytest.approx(42 * 512 / 1.0 * h, rel=1e-9)
    assert "auto: off, 2688 images per device save 4032 s <= 5000 s of compile" in rows["inpaint"]["note"]
    (tmp_path / "no_eager").mkdir()
    _, rows = run_budget(tmp_path / "no_eager", inpaint_calls={"inpaint": (None, 2.0, 90.0), "refine": (None, 3.0, 0.0)})
    assert rows["inpaint"]["hours_1"] == pytest.approx(42 * 512 / 2.0 * h, rel=1e-9) and not rows["inpaint"]["note"]


def test_mfu_is_ideal_over_measured(tmp_path):
    res, rows = run_budget(tmp_path)
    h = 1 / 3600
    assert rows["generate SD1.5"]["mfu"] == pytest.approx(50.0 * 6.0 / PEAK, rel=1e-9)  # TFLOP/img x img/s / peak
    assert rows["train_controlnet SDXL"]["tflop"] == pytest.approx(27500 * 8 * 4 * 25.0)
    evaluate = 1.6 * (500 + 42 * 512 + 100) + 1.4 * (4 * 400 + 981 + 60 + 10 + 30) + 0.8 * (
        5 * 512 + 5 * 512 + 28 * 64 + 27 * 64)
    assert rows["evaluate"]["tflop"] == pytest.approx(evaluate, rel=1e-9)
    # units match: images, or optimiser steps of batch 16 for the fine-tunes (rate 1 step/s in the fixture)
    assert rows["caption"]["tflop"] == pytest.approx((2975 + 500) * 0.6)
    assert rows["inpaint: Grounded-SAM"]["tflop"] == pytest.approx(42 * 512 * 6.0)
    assert rows["ood_detection: RbA Swin-B fine-tunes"]["tflop"] == pytest.approx(rows[
        "ood_detection: RbA Swin-B fine-tunes"]["units"] * 9.0)
    assert rows["ood_detection: RbA Swin-B fine-tunes"]["mfu"] == pytest.approx(9.0 * 1.0 / PEAK, rel=1e-9)
    assert rows["ood_detection: RbA Swin-L scoring"]["mfu"] == pytest.approx(4.0 * 4.0 / PEAK, rel=1e-9)
    assert rows["fid"]["mfu"] == pytest.approx(0.01 * 100.0 / PEAK, rel=1e-9)
    for r in [*rows.values(), res["forecast_row"]]:
        if r["tflop"] is None:  # calibrate alone: not FLOP-bound
            assert r["mfu"] is None and r["stage"] == "calibrate"
        else:
            assert r["ideal_hours_1"] == pytest.approx(r["tflop"] / PEAK * h, rel=1e-12)
            assert r["mfu"] == pytest.approx(r["ideal_hours_1"] / r["hours_1"], rel=1e-12)


def test_rba_rows_count_the_head_their_json_measured(tmp_path):
    """A throughput JSON with settings.head is counted on that head; one without (measured before #36) on
    transformers' default head, and its note says the released head costs less and how to remeasure."""
    res, rows = run_budget(tmp_path, settings={"rba_swin_b": {"head": "swin_b_1dl", "crop": "512x1024"}})
    b_tune, b_score = rows["ood_detection: RbA Swin-B fine-tunes"], rows["ood_detection: RbA Swin-B scoring"]
    l_tune, l_score = rows["ood_detection: RbA Swin-L fine-tunes"], rows["ood_detection: RbA Swin-L scoring"]
    assert b_tune["tflop"] == pytest.approx(b_tune["units"] * 7.2) and b_tune["mfu"] == pytest.approx(7.2 / PEAK)
    assert b_score["tflop"] == pytest.approx(b_score["units"] * 1.5)
    assert b_score["mfu"] == pytest.approx(1.5 * 8.0 / PEAK)
    assert l_tune["tflop"] == pytest.approx(l_tune["units"] * 16.0)
    assert l_score["mfu"] == pytest.approx(4.0 * 4.0 / PEAK)
    for row in (b_tune, b_score):
        assert "measured on RbA's released head (swin_b_1dl)" in row["note"] and "pessimistic" not in row["note"]
    assert "head swin_b_1dl" in b_tune["measured"]["detail"]  # the settings are quoted as the row's conditions
    rerun = "`python -m benchmarks.run throughput --stages rba_swin_b rba_swin_l` is rerun"
    # 1 - 12/16 and 1 - 3/4: the released head's share, per optimiser step and per scored image
    assert ("measured on transformers' default head (6 encoder + 10 decoder layers); RbA's released head "
            f"(swin_l_1dl) costs 25 % less per optimiser step: pessimistic until {rerun}") in l_tune["note"]
    assert "costs 25 % less per scored image" in l_score["note"]
    assert l_score["note"].startswith("measured at 1024x2048")


def test_the_rba_fine_tunes_quote_the_loaders_ceiling_measured_beside_a_gpu_first(tmp_path):
    """The loader's ceiling is AUTO_WORKERS / (batch x CPU seconds per sample) from the rbaloader JSON measured
    beside a GPU, else from the slowest CPU measured; without one the note says it is not measured. A ceiling below
    the GPU's rate is the rate counted."""
    from synthrel.runtime import AUTO_WORKERS

    stage_settings = {"rba_swin_b": {"head": "swin_b_1dl", "precision": "16-mixed"}}
    row = "ood_detection: RbA Swin-B fine-tunes"
    (tmp_path / "none").mkdir()
    _, rows = run_budget(tmp_path / "none", settings=stage_settings)
    assert "the loader's CPU cost is not measured (`python -m benchmarks.run rbaloader`)" in rows[row]["note"]
    gpu_hours = rows[row]["hours_1"]
    assert gpu_hours == pytest.approx(3 * 5000 / RATES["rba_swin_b"] / 3600, rel=1e-9)

    results = tmp_path / "measured" / "results"
    results.mkdir(parents=True)

    def loader(name, ms, gpu=None):
        (results / f"rba_loader_{name}.json").write_text(json.dumps(
            {"sample_ms": ms - 1.0, "collate_ms": 1.0, "cpu": name, "cores": 2, "gpu": gpu}))

    loader("fast", 50.0)
    loader("slow", 125.0)
    _, rows = run_budget(tmp_path / "measured", settings=stage_settings)
    assert (f"the stage's {AUTO_WORKERS} loader workers allow at most {AUTO_WORKERS / (16 * 0.125):.2f} step/s "
            "(125 ms of CPU per sample; slow, 2 cores, no GPU: rba_loader_slow.json); not measured through the "
            "stage") in rows[row]["note"]
    assert rows[row]["hours_1"] == gpu_hours  # 4 step/s from the loader: the GPU's 1 step/s bounds
    loader("host", 1000.0, gpu=H100)
    _, rows = run_budget(tmp_path / "measured", settings=stage_settings)
    ceiling = AUTO_WORKERS / (16 * 1.0)
    assert (f"allow at most {ceiling:.2f} step/s (1000 ms of CPU per sample; host, 2 cores, beside an {H100}: "
            f"rba_loader_host.json): counted at that ceiling, not at the GPU's 1.00") in rows[row]["note"]
    assert rows[row]["hours_1"] == pytest.approx(3 * 5000 / ceiling / 3600, rel=1e-9)


def test_rba_rows_of_an_unknown_head_are_not_counted(tmp_path):
    res, rows = run_budget(tmp_path, settings={"rba_swin_l": {"head": "swin_l_9dl"}})
    row = rows["ood_detection: RbA Swin-L fine-tunes"]
    assert row["hours_1"] > 0 and row["tflop"] is None and row["mfu"] is None
    assert "measured on the head swin_l_9dl, not RbA's released swin_l_1dl" in row["note"]
    assert rows["ood_detection: RbA Swin-B fine-tunes"]["tflop"] is not None


def test_rba_rows_without_a_json_are_counted_on_the_released_head(tmp_path):
    """No measurement: the row is "not measured" but keeps the FLOPs of the head the benchmark would measure."""
    res, rows = run_budget(tmp_path, skip=("rba_swin_b",))
    row = rows["ood_detection: RbA Swin-B fine-tunes"]
    assert row["measured"] is None and row["tflop"] == pytest.approx(row["units"] * 7.2) and row["mfu"] is None


def test_without_flops_json_the_rows_are_not_counted(tmp_path):
    res, rows = run_budget(tmp_path, skip=("flops",))
    assert all(r["tflop"] is None and r["mfu"] is None for r in rows.values())
    assert res["totals"]["paper"]["ideal_hours_1"] == 0 and res["totals"]["paper"]["hours_1"] > 0


def test_an_older_flops_json_leaves_the_rows_it_lacks_uncounted(tmp_path):
    old = {k: FLOPS[k] for k in ("sd15", "sdxl", "inpaint", "evaluate")}
    res, rows = run_budget(tmp_path, flops=old)
    assert rows["generate SD1.5"]["tflop"] is not None
    assert rows["caption"]["tflop"] is None and rows["ood_detection: RbA Swin-B scoring"]["mfu"] is None


def test_flop_count_of_a_conv_and_a_linear_layer_by_hand():
    import torch

    from benchmarks.flops import count

    with torch.device("meta"):
        conv, x = torch.nn.Conv2d(3, 8, 3, padding=1), torch.randn(2, 3, 16, 16)
        linear, y = torch.nn.Linear(10, 20), torch.randn(4, 10, requires_grad=True)
    # 2 FLOPs per multiply-add: outputs x (in channels x kernel area)
    assert count(lambda: conv(x)) == 2 * (2 * 8 * 16 * 16) * (3 * 3 * 3)
    assert count(lambda: linear(y)) == 2 * 4 * 10 * 20
    # forward + backward (input and weight gradients): 3 x the forward
    assert count(lambda: linear(y).sum().backward()) == 3 * 2 * 4 * 10 * 20


def test_meta_device_counts_agree_with_the_gpu_counts():
    """flops.json (counted on meta-device models) against the counts gen_bench and eval_bench took on the GPU
    with the real tensors: one guided step of SD1.5 / SDXL, and three zoo models at 1024x2048."""
    from benchmarks.budget import FLOPS, RESULTS

    flops = json.loads(FLOPS.read_text())
    for kind, name in (("sd15", "gen_bench_sd15_final_h100.json"), ("sdxl", "gen_bench_sdxl_compile_vae_h100.json")):
        gpu = json.loads((RESULTS / name).read_text())["models"][0]["guided_step_tflop"]
        assert flops[kind]["guided_step"] == pytest.approx(gpu, abs=1e-4), kind
    gpu = json.loads((RESULTS / "eval_bench_h200_run3.json").read_text())
    for key in ("segformer_b5", "dlv3p_r101", "pspnet_r18"):
        assert flops["evaluate"][key]["1024x2048"] == pytest.approx(gpu[key]["tflop_per_img"], rel=1e-3), key


def _compiled_sdxl(folder, per_s=6.0, first_step_s=300.0, device=H100, resolution=1024, checkpointing=True):
    """The eager SDXL fixture gets its settings; a `--train-compile` JSON beside it."""
    settings = {"resolution": 1024, "compile": False, "gradient_checkpointing": checkpointing}
    eager = {"stage": "controlnet_train_sdxl", "device": H100, "tiny": False, "per_s": RATES["controlnet_train_sdxl"],
             "settings": settings}
    (folder / "throughput_controlnet_train_sdxl_h100.json").write_text(json.dumps(eager))
    compiled = {**eager, "device": device, "per_s": per_s, "batch": 8,
                "settings": {**settings, "resolution": resolution, "compile": True, "first_step_s": first_step_s}}
    (folder / "throughput_controlnet_train_sdxl_compile_h100.json").write_text(json.dumps(compiled))


def built_rows(tmp_path, add):
    """benchmarks.budget.build_rows on the fixtures plus the JSONs `add(results)` writes."""
    from benchmarks.budget import build_rows

    results = tmp_path / "results"
    results.mkdir()
    write_fixtures(results)
    add(results)
    (tmp_path / "zoo.yaml").write_text(ZOO)
    return build_rows(results, tmp_path / "zoo.yaml")


def test_sdxl_training_at_the_compiled_rate_plus_one_compile_where_auto_compiles(tmp_path):
    """880,000 images save 880,000 x (1/4 - 1/6) s = 20 h against 300 s of compile: the row is compiled, the
    compile counted once on 1 GPU and once (in parallel) on the node, and measured_rates.json carries the trade."""
    from benchmarks.budget import rates_data, summarise

    rows, scaling, _ = built_rows(tmp_path, lambda results: _compiled_sdxl(results))
    row = next(r for r in rows if r.stage == "train_controlnet SDXL")
    images = 27500 * 8 * 4
    assert row.hours_1 == pytest.approx((images / 6.0 + 300.0) / 3600, rel=1e-12)
    assert row.wall_8_h == pytest.approx(images / 6.0 / 3600 / (8 * SCALING / 2) + 300.0 / 3600, rel=1e-12)
    assert "compile auto: on" in row.note
    carried = rates_data(rows, summarise(rows, scaling))["rows"]["train_controlnet SDXL"]
    assert carried["per_s"] == 6.0
    assert carried["compile"] == {"eager_per_s": 4.0, "compiled_per_s": 6.0, "compile_s": 300.0, "resolution": 1024,
                                  "card": H100, "source": "throughput_controlnet_train_sdxl_h100.json + "
                                                          "throughput_controlnet_train_sdxl_compile_h100.json"}


@pytest.mark.parametrize("compiled", [dict(first_step_s=1e9), dict(device=H200), dict(resolution=512)])
def test_sdxl_training_stays_eager_when_compile_does_not_pay_or_the_runs_differ(tmp_path, compiled):
    """A compile longer than the whole run saves, or a compiled run of another card or size: the eager rate."""
    rows, _, _ = built_rows(tmp_path, lambda results: _compiled_sdxl(results, **compiled))
    row = next(r for r in rows if r.stage == "train_controlnet SDXL")
    assert row.hours_1 == pytest.approx(27500 * 8 * 4 / 4.0 / 3600, rel=1e-12) and row.fixed_s == 0


def _levers(results, name="train_levers_sdxl_compile_h100.json", device=H100, **variants):
    (results / name).write_text(json.dumps({"device": device, "tiny": False, "settings": {"batch": 8, "resolution": 1024},
                                            "variants": variants}))


def test_the_one_time_compile_is_the_longest_first_step_measured_for_the_stages_setting(tmp_path):
    """The stage's run found Inductor's cache warm (30 s): a sweep's cold first step of the same compiled setting
    on the same card, resolution and batch (300 s) is the compile; other settings and cards say nothing of it."""
    def fixture(results, cold=True):
        _compiled_sdxl(results, first_step_s=30.0, checkpointing=False)
        _levers(results, "train_levers_sdxl_warm_h100.json", **{"compile+no_checkpointing": {"first_step_s": 31.0}})
        _levers(results, "train_levers_sdxl_ckpt_h100.json", **{"compile+no_unet_checkpointing": {"first_step_s": 900.0}})
        _levers(results, "train_levers_sdxl_h200.json", H200, **{"compile+no_checkpointing": {"first_step_s": 800.0}})
        if cold:
            _levers(results, "train_levers_sdxl_cold_h100.json", **{"compile+no_checkpointing": {"first_step_s": 300.0}})

    rows, _, _ = built_rows(tmp_path, fixture)
    trade = next(r for r in rows if r.stage == "train_controlnet SDXL").compile_trade
    assert trade["compile_s"] == 300.0 and trade["source"].endswith("; the compile: train_levers_sdxl_cold_h100.json")
    (tmp_path / "no_cold").mkdir()
    rows, _, _ = built_rows(tmp_path / "no_cold", lambda results: fixture(results, cold=False))
    trade = next(r for r in rows if r.stage == "train_controlnet SDXL").compile_trade
    assert trade["compile_s"] == 31.0 and trade["source"].endswith("; the compile: train_levers_sdxl_warm_h100.json")


def test_sdxl_training_takes_the_measured_speedup_of_controlnet_only_checkpointing(tmp_path):
    """The backbone's `gradient_checkpointing: auto` picks `controlnet` on the card both levers ran on: the
    compiled stage rate times compile+no_unet_checkpointing / compile of one sweep (7.5 / 6.0); the peak the stage
    decides with is the largest eager one of the sweeps, and measured_rates.json carries it."""
    from benchmarks.budget import rates_data, summarise

    def fixture(results):
        _compiled_sdxl(results)
        _levers(results, compile={"images_per_s": 6.0}, **{"compile+no_unet_checkpointing": {"images_per_s": 7.5}})
        _levers(results, "train_levers_sdxl_split_h100.json", no_unet_checkpointing={"images_per_s": 1, "peak_gib": 60})
        _levers(results, "train_levers_sdxl_other_h100.json", no_unet_checkpointing={"peak_gib": 55})

    rows, scaling, _ = built_rows(tmp_path, fixture)
    row = next(r for r in rows if r.stage == "train_controlnet SDXL")
    assert row.measured.per_s == pytest.approx(6.0 * 7.5 / 6.0)
    assert row.hours_1 == pytest.approx((27500 * 8 * 4 / 7.5 + 300.0) / 3600, rel=1e-12)
    assert "an estimate" in row.note and "train_levers_sdxl_compile_h100.json" in row.measured.source
    carried = rates_data(rows, summarise(rows, scaling))["rows"]["train_controlnet SDXL"]["checkpointing"]
    assert carried == {"peak_gib": 60, "batch": 8, "resolution": 1024, "card": H100,
                       "source": "train_levers_sdxl_split_h100.json", "compiled_speedup": 1.25,
                       "speedup_card": H100, "speedup_source": "train_levers_sdxl_compile_h100.json"}


@pytest.mark.parametrize("stage_checkpointing", [True, "controlnet"])
def test_sdxl_training_keeps_the_stage_rate_when_the_levers_ran_on_another_card_or_the_stage_measured_it(
        tmp_path, stage_checkpointing):
    """Levers of another card say nothing of this one; a stage run already in `controlnet` is not scaled twice."""
    def fixture(results):
        _compiled_sdxl(results, checkpointing=stage_checkpointing)
        _levers(results, device=H200 if stage_checkpointing is True else H100, compile={"images_per_s": 6.0},
                no_unet_checkpointing={"peak_gib": 60},
                **{"compile+no_unet_checkpointing": {"images_per_s": 7.5}})

    rows, _, _ = built_rows(tmp_path, fixture)
    row = next(r for r in rows if r.stage == "train_controlnet SDXL")
    assert row.measured.per_s == 6.0 and row.checkpointing["peak_gib"] == 60


#: two BiSeNetV1 models (the measured one and a member twice as slow eager) and an ICNet of a family that
#: eval_families did not measure; their mmseg configs test them whole at scale (2048, 1024)
FAMILY_ZOO = ZOO + """  bisenetv1_slow:
    family: BiSeNetV1
    framework: mmseg
    config: bisenetv1/bisenetv1_r50-d32-in1k-pre_4xb4-160k_cityscapes-1024x1024.py
    checkpoint: null
  icnet_r50:
    family: ICNet
    framework: mmseg
    config: icnet/icnet_r50-d8_4xb2-160k_cityscapes-832x832.py
    checkpoint: null
"""


def family_fixture(compile=True, tiny=False):
    run = lambda h, w, ood, img_s, compile_s: {"height": h, "width": w, "ood": ood, "steady_img_s": img_s,  # noqa: E731
                                               "compile_s": compile_s}
    return {"device": H100, "tiny": tiny, "settings": {"compile": compile},
            "models": {"bisenetv1_r50": {"family": "BiSeNetV1", "sizes": {
                "1024x2048:ood": run(1024, 2048, True, 10.0, 30.0), "512x512": run(512, 512, False, 40.0, 5.0)}}}}


def loader_profile(floor_img_s):
    """eval_families' PSPNet profile: the loader's capacity per worker count and set; the floor is the most
    workers' run of the slower PNG set (the in-memory set has no PNG decoding and does not count)."""
    run = lambda workers, img_s: {"workers": workers, "loader_capacity_img_s": img_s,  # noqa: E731
                                  "worker_read_ms_per_img": 90.0, "worker_collate_ms_per_img": 8.0}
    return {"pspnet_r18": {"size": [1024, 2048], "sets": {
        "cityscapes": {"runs": [{"workers": 0}, run(4, floor_img_s / 3), run(8, 2 * floor_img_s)]},
        "ood_objects": {"runs": [{"workers": 0}, run(4, floor_img_s / 2), run(8, floor_img_s)]},
        "in_memory": {"runs": [run(8, floor_img_s / 10)]}}}}


def run_family_budget(tmp_path, fixture, floor_img_s=None):
    from benchmarks.budget import main

    results = tmp_path / "results"
    results.mkdir()
    write_fixtures(results, skip=("flops",))
    eager = {"bisenetv1_r50": ZOO_SECONDS, "bisenetv1_slow": 2 * ZOO_SECONDS, "icnet_r50": 4 * ZOO_SECONDS}
    (results / "eval_zoo_run_512_h200.json").write_text(json.dumps({"zoo_run": {
        "zoo_images": ZOO_IMAGES, "precision": "bf16", "batch_size": 8,
        "models": {k: {"seconds": v} for k, v in eager.items()}}}))
    if fixture is not None:
        if floor_img_s is not None:
            fixture = {**fixture, "profile": loader_profile(floor_img_s)}
        (results / "eval_families_h100.json").write_text(json.dumps(fixture))
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(FAMILY_ZOO)
    res = main(["--results", str(results), "--zoo", str(zoo), "--json", str(tmp_path / "budget.json")])
    return res, {r["stage"]: r for r in res["rows"]}


#: the grid's images per (size, OOD masks), benchmarks/budget.py evaluation_grid: 1080x1920 and 720x1280 become
#: 1820x1024 at test scale (2048, 1024), 512x512 becomes 1024x1024
GRID = {((1024, 2048), False): 500, ((1024, 2048), True): 42 * 512 + 100, ((1080, 1920), False): 4 * 400 + 981,
        ((1080, 1920), True): 30, ((720, 1280), True): 60 + 10, ((512, 512), False): 5 * 512 + 28 * 64 + 27 * 64,
        ((1024, 1024), False): 5 * 512}
PIXELS = {(1024, 2048): 2048 * 1024, (1080, 1920): 1820 * 1024, (720, 1280): 1820 * 1024, (512, 512): 1024 * 1024,
          (1024, 1024): 1024 * 1024}


#: the loader's capacity (img/s at 1024x2048 through PNG files): 5 caps bisenetv1_r50's 10 img/s at 1024x2048 and
#: ties its 40 img/s at 512x512 (5 x 8 by pixels); None: no stage_bench JSON, no cap
@pytest.mark.parametrize("floor_img_s", [None, 5.0])
def test_evaluate_row_from_compiled_family_rates_by_hand(tmp_path, capsys, floor_img_s):
    res, rows = run_family_budget(tmp_path, family_fixture(), floor_img_s)
    eager_512 = ZOO_SECONDS / ZOO_IMAGES  # s per 512x512 image of bisenetv1_r50 (its cost: 1024x1024 pixels)

    def host(size):  # the grid's true sizes: the loader reads the pixels of the files, not the processed ones
        return 0.0 if floor_img_s is None else size[0] * size[1] / (1024 * 2048) / floor_img_s

    def measured(size):  # bisenetv1_r50 compiled: measured sizes as measured (1024x2048 without OOD masks takes
        if size == (1024, 2048):  # the :ood rate); the rest scaled from the first measured size by pixels
            return 1 / 10.0
        if size == (512, 512):
            return 1 / 40.0
        return PIXELS[size] / PIXELS[(1024, 2048)] / 10.0

    def eager(size, factor):
        return factor * eager_512 * PIXELS[size] / PIXELS[(512, 512)]

    seconds = 0.0
    for (size, _), k in GRID.items():
        rep = measured(size)
        seconds += k * max(rep, host(size))  # bisenetv1_r50
        seconds += k * max(eager(size, 2) * rep / eager(size, 1), host(size))  # its member: twice its eager time
        seconds += k * max(eager(size, 4), host(size))  # icnet_r50: family not measured, eager rule
    # compile once per (model, size) for the two BiSeNetV1 models: 30 s at 1024x2048, 5 s at 512x512, and the
    # largest measured (30 s) at the three sizes not measured; none for ICNet
    seconds += 2 * (30 + 5 + 3 * 30)
    evaluate = rows["evaluate"]
    assert evaluate["hours_1"] == pytest.approx(seconds / 3600, rel=1e-9)
    assert "eval_families_h100.json" in evaluate["measured"]["source"] and H100 in evaluate["measured"]["card"]
    assert "2 models of 1 families at compiled rates" in evaluate["note"]
    if floor_img_s is not None:  # at 1024x2048 bisenetv1_r50 (0.1 s) is under the floor (0.2 s); its member ties it
        assert "eval_families_h100.json: 5 img/s at 1024x2048, 8 loader workers, 98 ms per image each" in \
            evaluate["note"]
        assert "1 models are loader-bound at 1024x2048" in evaluate["note"]
    assert res["zoo_runs"]["evaluate_hours_1_by_set"]["compile (once per model and input size)"] == \
        pytest.approx(2 * 125 / 3600, abs=1e-3)
    # the forecast's mean model: the three models' means on 5 x 512 synthetic 512x512 images and the OOD set, and
    # compile at those two sizes (2 of 3 models compiled)
    f = res["forecast_row"]
    per_512, per_ood = ((max(measured(size), host(size)) + max(eager(size, 2) * measured(size) / eager(size, 1),
                         host(size)) + max(eager(size, 4), host(size))) / 3 for size in ((512, 512), (1024, 2048)))
    compile_mean = 2 * (5 + 30) / 3
    assert f["hours_1"] == pytest.approx((5 * 512 * per_512 + 42 * 512 * per_ood + compile_mean) / 3600, rel=1e-9)
    assert f["wall_8_h"] == pytest.approx((42 * 512 * per_ood + 2 * 30 / 3) / 3600, rel=1e-9)


def test_family_runs_merge_the_files_of_one_card(tmp_path):
    """Families measured in separate evalfam runs on the preferred card all count; another card's file does not
    mix in, and a file that measured the same family later (by name) wins."""
    from benchmarks.budget import family_runs

    def one(family, model, img_s, device=H100):
        return {"device": device, "settings": {"compile": True}, "models": {model: {"family": family, "sizes": {
            "512x512": {"height": 512, "width": 512, "ood": False, "steady_img_s": img_s, "compile_s": 1.0}}}}}

    (tmp_path / "eval_families_h100.json").write_text(json.dumps(one("PSPNet", "pspnet_r18", 10.0)))
    (tmp_path / "eval_families_rest_h100.json").write_text(json.dumps(one("ICNet", "icnet_r50", 20.0)))
    (tmp_path / "eval_families_retry_h100.json").write_text(json.dumps(one("PSPNet", "pspnet_r18", 11.0)))
    (tmp_path / "eval_families_h200.json").write_text(json.dumps(one("CCNet", "ccnet_r50", 30.0, "NVIDIA H200")))
    families, card, files = family_runs(tmp_path)
    assert sorted(families) == ["ICNet", "PSPNet"] and card == H100
    assert families["PSPNet"]["sizes"]["512x512"]["steady_img_s"] == 11.0
    assert files == "eval_families_h100.json + eval_families_rest_h100.json + eval_families_retry_h100.json"


@pytest.mark.parametrize("fixture", [None, family_fixture(compile=False), family_fixture(tiny=True)])
def test_evaluate_row_falls_back_to_the_eager_rates(tmp_path, fixture):
    """No eval_families JSON, an eager one or a tiny one: every model at its eager 512x512 time scaled, no
    compile, and the note says so."""
    _, rows = run_family_budget(tmp_path, fixture)
    eager_512 = ZOO_SECONDS / ZOO_IMAGES
    seconds = sum(k * factor * eager_512 * PIXELS[size] / PIXELS[(512, 512)]
                  for (size, _), k in GRID.items() for factor in (1, 2, 4))
    assert rows["evaluate"]["hours_1"] == pytest.approx(seconds / 3600, rel=1e-9)
    assert rows["evaluate"]["note"].startswith("eager rates (no eval_families JSON)")


def _generation_jsons(folder, eager_size=512):
    """gen_bench JSONs of the sampler compiled (SD1.5: batch 1 first, then 8 and 32) and eager (`--no-compile`)."""
    def put(name, device, size, sampler_compile, rows):
        data = {"device": device, "models": [{"size": size, "steps": 25, "sampler": {"compile": sampler_compile},
                                              "rows": [{"batch": b, "synthrel": {"img_per_s": r, "warmup_extra_s": w}}
                                                       for b, r, w in rows]}]}
        (folder / name).write_text(json.dumps(data))

    put("gen_bench_sd15_final_h100.json", H100, 512, "default", [(1, 2.0, 100.0), (8, 6.0, 20.0), (32, 7.0, 90.0)])
    put("gen_bench_sd15_fast_eager_h100.json", H100, eager_size, None, [(4, 3.5, 1.0), (8, 4.0, 2.0)])
    put("gen_bench_sdxl_compile_vae_h100.json", H100, 1024, "default", [(8, 0.8, 200.0)])
    put("gen_bench_sdxl_fast_eager_h100.json", H100, 1024, None, [(8, 0.6, 5.0)])


def test_generate_rows_run_as_the_stages_compile_auto_decides(tmp_path):
    """SD1.5: compile 100 + 20 s (the calls up to the first at batch 8), saving 1/4 - 1/6 = 1/12 s per image:
    6080 images on 1 GPU save 507 s > 120 (compiled + 120 s); a shard of 760 on 8 GPUs saves 63 s (eager).
    SDXL: 200 s against 1/0.6 - 1/0.8 s per image: 2560 images save 1067 s (compiled), 320 save 133 s (eager)."""
    from benchmarks.budget import rates_data, summarise

    rows, scaling, _ = built_rows(tmp_path, lambda results: _generation_jsons(results))
    sd15, sdxl = (next(r for r in rows if r.stage == f"generate {m}") for m in ("SD1.5", "SDXL"))
    images = 5 * 512 + 28 * 64 + 27 * 64
    assert sd15.hours_1 == pytest.approx((images / 6.0 + 120.0) / 3600, rel=1e-12)
    assert sd15.wall_8_h == pytest.approx(images / 8 / 4.0 / 3600, rel=1e-12)
    assert sdxl.hours_1 == pytest.approx((2560 / 0.8 + 200.0) / 3600, rel=1e-12)
    assert sdxl.wall_8_h == pytest.approx(320 / 0.6 / 3600, rel=1e-12)
    assert "1 GPU: compile auto: on" in sd15.note and "8 GPUs: compile auto: off, 760 images" in sd15.note
    carried = rates_data(rows, summarise(rows, scaling))["rows"]
    assert carried["generate SD1.5"]["per_s"] == 6.0
    assert carried["generate SD1.5"]["compile"] == {
        "eager_per_s": 4.0, "compiled_per_s": 6.0, "compile_s": 120.0, "resolution": 512, "card": H100,
        "source": "gen_bench_sd15_fast_eager_h100.json + gen_bench_sd15_final_h100.json"}
    assert carried["generate SDXL"]["compile"]["compile_s"] == 200.0


def test_generate_rows_keep_the_compiled_rate_without_a_matching_eager_run(tmp_path):
    """An eager run of another size is no trade: the compiled rate as measured, no compile counted (as before)."""
    rows, _, _ = built_rows(tmp_path, lambda results: _generation_jsons(results, eager_size=256))
    sd15 = next(r for r in rows if r.stage == "generate SD1.5")
    assert sd15.compile_trade is None and sd15.fixed_s == 0
    assert sd15.hours_1 == pytest.approx((5 * 512 + 28 * 64 + 27 * 64) / 6.0 / 3600, rel=1e-12)
