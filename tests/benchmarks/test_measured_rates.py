"""synthrel/measured_rates.json (package data: the rates preflight and +experiment=gpu_check quote) holds exactly
what `python -m benchmarks.run budget` computes from docs/bench_results, so the pipeline and the budget never
disagree; a new measurement means `python -m benchmarks.run budget --write-rates`."""

import json

from benchmarks.budget import RATES, RESULTS, build_rows, rates_data, summarise


def test_package_rates_are_the_budgets():
    rows, scaling, _ = build_rows(RESULTS)
    expected = json.loads(json.dumps(rates_data(rows, summarise(rows, scaling))))
    assert json.loads(RATES.read_text()) == expected, \
        "synthrel/measured_rates.json is stale: run `python -m benchmarks.run budget --write-rates`"


def test_every_pipeline_stage_named_by_a_row_exists():
    from synthrel.run import STAGE_ORDER

    rows = json.loads(RATES.read_text())["rows"]
    assert {r["stage"] for r in rows.values()} <= set(STAGE_ORDER)
    assert {"caption", "train_controlnet", "generate", "inpaint", "evaluate", "calibrate", "ood_detection",
            "fid"} <= {r["stage"] for r in rows.values() if r["per_s"]}
