"""benchmarks/budget.py on small JSON fixtures: the arithmetic of the table, checked by hand (hours = units /
rate / 3600; 8 GPUs: sharded / 8, independent runs one per GPU, DDP at the measured 2-GPU efficiency), the
"not measured" rows, the totals, the target and the dominant stage."""

import json

import pytest

H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
#: one whole-mode model at test scale (2048, 1024), so the processed pixels per image are known by hand
ZOO = """name: one
models:
  bisenetv1_r50:
    family: BiSeNetV1
    framework: mmseg
    config: bisenetv1/bisenetv1_r50-d32-in1k-pre_4xb4-160k_cityscapes-1024x1024.py
    checkpoint: null
    test_mode: whole
    test_scale: [2048, 1024]
"""
RATES = {"caption": 5.0, "controlnet_train_sd15": 30.0, "controlnet_train_sdxl": 4.0, "grounded_sam": 2.0,
         "rba_swin_b": 1.0, "rba_swin_l": 0.5, "calibrate": 0.1, "fid_features": 100.0}
PREDICT = {"rba_swin_b": 8.0, "rba_swin_l": 4.0}
SCALING = 1.6
ZOO_SECONDS, ZOO_IMAGES = 25.6, 512  # 0.05 s per 512x512 image


def write_fixtures(folder, skip=()):
    def put(name, data):
        (folder / name).write_text(json.dumps(data))

    for stage, rate in RATES.items():
        if stage not in skip:
            put(f"throughput_{stage}_h100.json", {"stage": stage, "device": H100, "tiny": False, "per_s": rate,
                                                  **({"predict_img_s": PREDICT[stage]} if stage in PREDICT else {})})
    put("throughput_caption_cpu.json", {"device": "cpu", "tiny": True, "per_s": 1e6})  # tiny runs are ignored
    rows = lambda batch, rate: [{"batch": batch, "synthrel": {"img_per_s": rate}}]  # noqa: E731
    put("gen_bench_sd15_final_h100.json", {"device": H100, "models": [{"rows": rows(8, 6.0)}]})
    put("gen_bench_sdxl_compile_vae_h100.json", {"device": H100, "models": [{"rows": rows(8, 0.8)}]})
    put("gen_bench_inpaint_h200.json", {"device": H200, "models": [{"rows": [
        {"batch": 1, "call": "inpaint", "synthrel": {"img_per_s": 2.0}},
        {"batch": 1, "call": "refine", "synthrel": {"img_per_s": 3.0}}]}]})
    put("multigpu_h200x2_run1.json", {"devices": [H200, H200], "train": {"scaling": SCALING, "one_device": {
        "images_per_s": 99.0, "batch": 8, "accumulate": 2, "precision": "bf16-mixed"}}})
    put("eval_zoo_run_512_h200.json", {"zoo_run": {"zoo_images": ZOO_IMAGES, "precision": "bf16", "batch_size": 8,
                                                   "models": {"bisenetv1_r50": {"seconds": ZOO_SECONDS}}}})


def run_budget(tmp_path, skip=()):
    from benchmarks.budget import main

    results = tmp_path / "results"
    results.mkdir()
    write_fixtures(results, skip)
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
    check("inpaint", 42 * 512 / 2.0 * h, 42 * 512 / 2.0 * h / 8, H200)
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
