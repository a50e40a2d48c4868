"""A small world for forecast tests: demo data, synthetic sets made from it, and a simulated reference zoo.

The simulated zoo has a known linear relation between each model's value on the synthetic set of a domain
and on its real counterpart (plus seeded Gaussian noise), written the way the evaluate stage writes results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from synthrel.data.cityscapes import CityscapesDataset
from synthrel.data.demo import DemoDataJob
from synthrel.data.io import read_label
from synthrel.data.synthetic import write_item

# each domain's real set as the default real_split=test reports it (spec 2.1: the relis test splits)
DOMAINS = {"fog": "acdc_fog_test", "night": "acdc_night_test", "rain": "acdc_rain_test", "snow": "acdc_snow_test",
           "india": "idd_test"}
ZOO_SEED = 7  # the simulated zoo is drawn from default_rng(ZOO_SEED)
SLOPE, INTERCEPT, NOISE = 0.8, 0.02, 0.01  # real = INTERCEPT + SLOPE * synthetic + N(0, NOISE)


def build_data(outputs: Path) -> None:
    """Demo data under outputs/tiny/data and one synthetic set per domain under outputs/tiny/artifacts."""
    data = outputs / "tiny" / "data"
    DemoDataJob(root=str(data), n_train=2, n_val=3, n_shift=2, n_ood=2).run()
    clean = CityscapesDataset(data / "cityscapes", split="val")
    for k, domain in enumerate(DOMAINS):
        root = outputs / "tiny" / "artifacts" / "synthetic" / "sd15" / domain
        for index, item in enumerate(clean.items):
            image = clean[index]["image"].astype(np.float32)
            shifted = np.clip(image * (0.5 + 0.1 * k) + 20 * k, 0, 255).astype(np.uint8)
            write_item(root, item.id, item.id.split("_")[0], shifted, read_label(item.label), meta={"domain": domain})


def simulated_zoo(n_models: int = 8, profile: str = "tiny") -> pd.DataFrame:
    """mIoU and ECE of n models on each synthetic set and its real counterpart, and on Cityscapes val (drawn
    independently of the real values), in the results' long format."""
    rng = np.random.default_rng(ZOO_SEED)
    rows = []

    def add(model, dataset, domain, generator, metric, value):
        rows.append({"model": model, "family": "Sim", "dataset": dataset, "domain": domain, "generator": generator,
                     "metric": metric, "cls": "", "value": float(value), "n_images": 3, "profile": profile})

    for m in range(n_models):
        model = f"sim{m}"
        for domain, real in DOMAINS.items():
            for metric in ("mIoU", "ece"):
                synthetic = rng.uniform(0.0, 0.4)
                add(model, f"synthetic_sd15_{domain}", domain, "sd15", metric, synthetic)
                add(model, real, domain, "real", metric, INTERCEPT + SLOPE * synthetic + rng.normal(0, NOISE))
    clean = np.random.default_rng(ZOO_SEED + 1)  # Cityscapes val (the clean predictor), uninformative here
    for m in range(n_models):
        for metric in ("mIoU", "ece"):
            add(f"sim{m}", "cityscapes_test", "cityscapes", "real", metric, clean.uniform(0.2, 0.7))
    return pd.DataFrame(rows)


def write_results(zoo: pd.DataFrame, root: Path) -> Path:
    """One metrics.parquet per (model, dataset) under root/<model>/<dataset>/, as the evaluate stage does."""
    for (model, dataset), table in zoo.groupby(["model", "dataset"]):
        out = root / model / dataset
        out.mkdir(parents=True, exist_ok=True)
        table.to_parquet(out / "metrics.parquet", index=False)
    return root
