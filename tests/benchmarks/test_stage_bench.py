"""benchmarks/stage_bench.py on CPU with tiny models: the evaluate stage through run_stages on PNG files in the
real layouts, against mmseg's loop on the same files (no timing is asserted)."""

import json

import numpy as np


def test_stage_bench_tiny_smoke(tmp_path):
    from benchmarks.stage_bench import main

    path = tmp_path / "stage.json"
    res = main(["--tiny", "--models", "pspnet_r18", "--runs", "fp32_exact", "--num-workers", "0",
                "--world", str(tmp_path / "world"), "--keep", "--json", str(path)])
    assert json.loads(path.read_text())["pspnet_r18"]["runs"].keys() == {"fp32_exact"}
    model = res["pspnet_r18"]
    run = model["runs"]["fp32_exact"]
    assert model["device"] == "cpu" and model["mmseg_loop"]["img_s"] > 0
    # the stage evaluated the four pairs (two warm-ups, Cityscapes, OOD objects) and wrote them
    assert run["evaluated_pairs"] == 4
    assert {"DONE", "metrics.csv", "confusion.npy", "calib_sample.npz"} <= set(run["results_files"])
    assert {"auroc_entropy", "fpr95_msp"} <= set(run["ood_metric_rows"])  # OOD rows where the set has masks
    # the exact fp32 path writes mmseg's confusion matrices
    assert run["confusion_equal_to_mmseg"] == {"cityscapes": True, "ood_objects": True}
    assert run["confusion_abs_diff_sum"] == {"cityscapes": 0, "ood_objects": 0}
    # the time split is consistent: evaluate_dataset is a part of the steady window, which is part of the total
    timed = run["split"]["cityscapes"]["evaluate_dataset_s"] + run["split"]["ood_objects"]["evaluate_dataset_s"]
    assert 0 < timed <= run["steady_s"] <= run["stage_total_s"]
    steady = run["steady_s"]  # rounded to the millisecond, stage_img_s to 0.01: bounds, not a relative tolerance
    assert 6 / (steady + 5e-4) - 0.005 <= run["stage_img_s"] <= 6 / max(steady - 5e-4, 1e-9) + 0.005
    assert np.isclose(run["ratio_vs_mmseg_loop"], run["stage_img_s"] / model["mmseg_loop"]["img_s"], rtol=0.02)
    # the data it read were PNGs in the Cityscapes layout and the inpaint stage's OOD layout
    world = tmp_path / "world"
    assert len(list((world / "cityscapes/leftImg8bit/val/frankfurt").glob("*_leftImg8bit.png"))) == 4
    assert len(list((world / "ood_objects/masks").glob("*/*_mask.png"))) == 2
    assert (world / "checkpoints/pspnet_r18.pth").is_file()
