"""Table 2 of the paper: RbA without outlier exposure, + COCO, + synthetic OOD (curated / all), Swin-B and Swin-L.

Rows are the RbA models of the ood_detection stage (base, fine-tuned variant); columns are the pooled RbA metrics
(AUROC, AP, FPR95 in %, spec 3.4 B) on each OOD set, then the paper's numbers (spec 5.2, most likely Road
Anomaly). A cell that could not be computed says why ("not run: COCO not given", "not run: <set> not present").
"""

from __future__ import annotations

import pandas as pd

#: spec 5.2 (AUROC, AUPR, FPR95 in %), keyed by (base model, fine-tune variant; None = no OE).
PAPER = {
    ("rba_swin_b", None): (95.6, 78.4, 11.8), ("rba_swin_b", "coco"): (97.8, 85.3, 8.5),
    ("rba_swin_b", "synthetic_curated"): (97.2, 84.9, 8.1), ("rba_swin_b", "synthetic_all"): (97.3, 84.8, 8.2),
    ("rba_swin_l", None): (96.4, 79.6, 15.0), ("rba_swin_l", "coco"): (98.2, 88.7, 8.2),
    ("rba_swin_l", "synthetic_curated"): (97.2, 88.0, 7.9), ("rba_swin_l", "synthetic_all"): (98.1, 88.6, 8.3),
}
BACKBONES = {"rba_swin_b": "Swin-B", "rba_swin_l": "Swin-L"}
VARIANT_LABELS = {None: "no OE", "coco": "+ COCO data", "synthetic_curated": "+ Ours (curated)",
                  "synthetic_all": "+ Ours (all)"}
METRICS = (("auroc", "AUROC"), ("ap", "AP"), ("fpr95", "FPR95"))
SCORE = "rba"


def row_label(model: str, base: str | None, variant: str | None) -> str:
    base = base or model
    name = f"RbA ({BACKBONES.get(base, base)})"
    return f"{name}, {VARIANT_LABELS[None]}" if variant is None else \
        f"{name} {VARIANT_LABELS.get(variant, '+ ' + variant)}"


def table2(rows: pd.DataFrame, models: dict[str, tuple[str | None, str | None]], datasets: list[str],
           not_run: dict[tuple[str, str | None], str], keys: dict[str, str] | None = None) -> pd.DataFrame:
    """The layout: one row per model (in `models` order), `<dataset> <metric>` in %, then `paper <metric>`."""
    keys = keys or {}
    pooled = rows[(rows["convention"] == "rba_pooled") & (rows["score"] == SCORE)] if len(rows) else rows
    table = {}
    for model, (base, variant) in models.items():
        cells = {}
        for dataset in datasets:
            reason = not_run.get((model, None)) or not_run.get((model, dataset))
            for metric, label in METRICS:
                column = f"{dataset} {label}"
                if reason:
                    cells[column] = reason
                    continue
                hit = pooled[(pooled["model"] == model) & (pooled["dataset"] == keys.get(dataset, dataset))
                             & (pooled["metric"] == f"{metric}_{SCORE}")]
                cells[column] = 100 * float(hit["value"].iloc[-1]) if len(hit) else "not run"
        paper = PAPER.get((base or model, variant))
        for (_, label), value in zip(METRICS, paper or (None,) * 3, strict=True):
            cells[f"paper {label}"] = value if value is not None else "n/a"
        table[row_label(model, base, variant)] = cells
    return pd.DataFrame.from_dict(table, orient="index")
