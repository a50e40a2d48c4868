"""Data-size ablation (paper S13): how stable is the PCC when only K synthetic images are available?

For K in `sizes` and R seeded repeats, draw K images (the same images for every model), pool their
per-image confusion matrices, recompute each model's mIoU and correlate it with the real-data mIoU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from synthrel.analysis.correlation import REAL_DATASETS, paired_values, pearson_along, predictor_view
from synthrel.errors import DatasetError
from synthrel.jobs import item_rng, load_npy_artifact
from synthrel.metrics.segmentation import mean_iou

log = logging.getLogger(__name__)

CONFUSION_FILENAME = "per_image_confusion.npy"


def load_confusions(results: pd.DataFrame, generator: str, domain: str) -> dict[str, np.ndarray]:
    """Per-model (n_images, C, C) arrays saved by the evaluate stage next to the predictor's metrics table."""
    view = predictor_view(results)
    rows = view[(view["generator"] == generator) & (view["domain"] == domain) & (view["metric"] == "mIoU")]
    if rows.empty:
        raise DatasetError(f"no mIoU rows for generator {generator!r} and domain {domain!r}")
    confusions, missing = {}, []
    for model, source in zip(rows["model"], rows["source"], strict=True):
        path = Path(source).parent / CONFUSION_FILENAME
        if path.exists():
            confusions[model] = load_npy_artifact(path, "per-image confusion matrices", "Re-run the evaluate "
                                                  "stage on this (model, dataset) pair with force=true")
        else:
            missing.append(str(path))
    if missing:
        raise DatasetError(
            f"data-size ablation needs {CONFUSION_FILENAME} per model (written by the evaluate stage with "
            f"per-image confusion saving on); missing: {missing[:3]}{' ...' if len(missing) > 3 else ''}"
        )
    counts = {m: c.shape[0] for m, c in confusions.items()}
    if len(set(counts.values())) != 1:
        raise DatasetError(f"models were evaluated on different numbers of images {counts}; "
                           "the ablation draws the same images for every model")
    return confusions


def data_size_ablation(
    confusions: Mapping[str, np.ndarray],
    real_miou: Mapping[str, float],
    sizes: Sequence[int],
    repeats: int,
    seed: int,
    notes: list[str] | None = None,
    what: str = "",
) -> pd.DataFrame:
    """Pearson r between subset mIoU and real mIoU, one row per (size, repeat); sizes above the set are skipped
    (named in the log and in `notes`, which the report shows)."""
    models = sorted(set(confusions) & set(real_miou))
    if len(models) < 3:
        raise DatasetError(f"data-size ablation needs at least 3 models with both sets, got {models}")
    stack = np.stack([confusions[m] for m in models])  # (M, N, C, C)
    y = np.array([real_miou[m] for m in models], dtype=np.float64)
    n_images = stack.shape[1]
    rows = []
    too_large = [size for size in sizes if size > n_images]
    if too_large:
        note = (f"data-size ablation {what}: size(s) {too_large} exceed the {n_images} image(s) of the synthetic set "
                "and were skipped" + ("; no size fits, so no ablation table or figure" if len(too_large) == len(sizes)
                                       else ""))
        log.warning(note)
        if notes is not None:
            notes.append(note)
    for size in sizes:
        if size > n_images:
            continue
        for repeat in range(repeats):
            chosen = item_rng(seed, repeat, f"size={size}").choice(n_images, size=size, replace=False)
            x = mean_iou(stack[:, chosen].sum(axis=1))
            rows.append({"size": size, "repeat": repeat, "pearson": float(pearson_along(x, y)),
                         "n_models": len(models), "seed": seed})
    return pd.DataFrame(rows)


def ablation_for(
    results: pd.DataFrame,
    generator: str,
    domain: str,
    sizes: Sequence[int],
    repeats: int,
    seed: int,
    real_datasets: Mapping[str, str] = REAL_DATASETS,
    notes: list[str] | None = None,
) -> pd.DataFrame:
    """Run the ablation for one synthetic set against its real counterpart's mIoU."""
    real = paired_values(results, "mIoU", domain, generator, real_datasets=real_datasets)
    confusions = load_confusions(results, generator, domain)
    table = data_size_ablation(confusions, dict(zip(real["model"], real["y"], strict=True)), sizes, repeats, seed,
                               notes=notes, what=f"{generator}->{domain}")
    table.insert(0, "domain", domain)
    table.insert(0, "generator", generator)
    return table
