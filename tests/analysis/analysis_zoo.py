"""Synthetic zoo results tables (helpers for tests/analysis) written the way the evaluate stage writes them (one parquet per job)."""

from pathlib import Path

import numpy as np
import pandas as pd

from synthrel.conventions import CLASS_NAMES

DOMAINS = ("fog", "night", "rain", "snow", "india")
REAL = {"fog": "acdc_fog", "night": "acdc_night", "rain": "acdc_rain", "snow": "acdc_snow", "india": "idd"}


def _rows(model, dataset, domain, generator, miou, ece, class_iou, profile, n_images=8):
    base = {"model": model, "family": model.split("-")[0], "dataset": dataset, "domain": domain,
            "generator": generator, "n_images": n_images, "profile": profile}
    rows = [{**base, "metric": "mIoU", "cls": "", "value": miou}, {**base, "metric": "ece", "cls": "", "value": ece}]
    rows += [{**base, "metric": "IoU", "cls": c, "value": v} for c, v in zip(CLASS_NAMES, class_iou, strict=True)]
    return rows


def make_zoo(n_models=12, seed=0, profile="tiny", domains=DOMAINS) -> pd.DataFrame:
    """Real and synthetic scores share a latent robustness per model, so correlations are high but not 1."""
    rng = np.random.default_rng(seed)
    robustness = rng.uniform(0.3, 0.8, n_models)
    rows = []
    for m in range(n_models):
        model = f"fam{m % 3}-m{m}"
        clean = np.clip(robustness[m] + 0.1 + rng.normal(0, 0.03, len(CLASS_NAMES)), 0, 1)
        rows += _rows(model, "cityscapes", "cityscapes", "real", clean.mean(), 0.05, clean, profile)
        for d in domains:
            real = np.clip(robustness[m] + rng.normal(0, 0.05, len(CLASS_NAMES)), 0, 1)
            rows += _rows(model, REAL[d], d, "real", real.mean(), 0.2 - 0.1 * real.mean(), real, profile)
            for generator, noise in (("sd15", 0.05), ("sdxl", 0.03)):
                synth = np.clip(real + rng.normal(0, noise, len(CLASS_NAMES)), 0, 1)
                rows += _rows(model, f"synthetic_{generator}_{d}", d, generator, synth.mean(),
                              0.2 - 0.1 * synth.mean() + rng.normal(0, 0.01), synth, profile)
    return pd.DataFrame(rows)


def write_zoo(zoo: pd.DataFrame, root: Path) -> Path:
    """One metrics.parquet per (model, dataset), as results/<zoo>/<model>/<dataset>/metrics.parquet."""
    for (model, dataset), table in zoo.groupby(["model", "dataset"]):
        out = root / model / dataset
        out.mkdir(parents=True, exist_ok=True)
        table.to_parquet(out / "metrics.parquet", index=False)
    return root
