"""The results store: one folder per (zoo, model, dataset) job, a tidy long metrics table, a DONE marker.

Layout: `<root>/<zoo>/<model>/<dataset key>/{metrics.parquet, metrics.csv, confusion.npy, calib_sample.npz,
ood_hist.npz, DONE}`. Values are fractions in [0, 1] (reports multiply by 100); `cls` is "" for
dataset-level rows and the class name for per-class IoU. Every file is written atomically and DONE last,
so a folder without DONE is an interrupted job that is redone.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from synthrel.conventions import CLASS_NAMES
from synthrel.evaluation.engine import OOD_HIGH_IS_ID, OOD_RANGES, OOD_SCORES, EvalOutputs
from synthrel.jobs import atomic_path, write_json_atomic
from synthrel.metrics.calibration import ece_from_bins
from synthrel.metrics.segmentation import iou_per_class, mean_iou, pixel_accuracy

log = logging.getLogger(__name__)

COLUMNS = ["model", "family", "dataset", "domain", "generator", "metric", "cls", "value", "n_images", "profile"]
DONE = "DONE"


def job_dir(root, zoo: str, model: str, dataset_key: str) -> Path:
    return Path(root) / zoo / model / dataset_key


def is_done(folder, expected: dict | None = None) -> bool:
    """A finished job; with `expected` (setting -> value, e.g. weights and dataset fingerprints, precision,
    seed), only if its DONE record holds the same values, so a changed checkpoint, dataset or setting is
    evaluated again instead of leaving a stale number in the tables. The log names what changed."""
    marker = Path(folder) / DONE
    if not marker.is_file():
        return False
    record = json.loads(marker.read_text())
    changed = {key: (record.get(key), value) for key, value in (expected or {}).items() if record.get(key) != value}
    if changed:
        log.info("%s: evaluating again, changed since the last run: %s", folder,
                 "; ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items()))
        return False
    return True


def weights_fingerprint(checkpoint: str | None, config: str) -> str:
    """Identity of a model's weights: a local file by path, size and modification time; a URL by itself."""
    source = checkpoint or config
    path = Path(str(source).removeprefix("file://"))
    if path.is_file():
        stat = path.stat()
        return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return str(source)


def metric_rows(out: EvalOutputs, meta: dict, absent_classes=()) -> pd.DataFrame:
    """Rows for mIoU, pixel_acc, per-class IoU, ece, ece_paper and (when available) OOD metrics."""
    rows = []

    def add(metric, value, cls=""):
        rows.append({**meta, "metric": metric, "cls": cls, "value": float(value), "n_images": out.n_images})

    if out.confusion is not None:
        add("mIoU", mean_iou(out.confusion, absent_classes))
        add("pixel_acc", pixel_accuracy(out.confusion))
        for name, iou in zip(CLASS_NAMES, iou_per_class(out.confusion, absent_classes), strict=True):
            add("IoU", iou, name)
        add("ece", ece_from_bins(out.ece_bins))
        add("ece_paper", ece_from_bins(out.ece_paper_bins))
    if out.ood is not None:
        for metric, value in ood_metric_values(out.ood["pooled"]).items():
            add(metric, value)
    return pd.DataFrame(rows, columns=COLUMNS)


def ood_metric_values(pooled: np.ndarray) -> dict[str, float]:
    """Pooled-pixel OOD metrics per score with synthrel.metrics.ood, OOD as the positive class.

    Histograms are ascending in the raw score; for confidence scores (MSP, max logit) the bins are reversed
    so that they ascend in anomaly score. Empty when synthrel.metrics.ood is not available.
    """
    try:
        ood = importlib.import_module("synthrel.metrics.ood")
        from_counts = ood.ood_metrics_from_counts
    except (ImportError, AttributeError):
        log.warning("synthrel.metrics.ood.ood_metrics_from_counts is not available: OOD metric rows left out "
                    "(histograms are still saved in ood_hist.npz)")
        return {}
    values = {}
    for s, name in enumerate(OOD_SCORES):
        neg, pos = pooled[s, 0], pooled[s, 1]
        if OOD_HIGH_IS_ID[name]:
            neg, pos = neg[::-1], pos[::-1]
        if pos.sum() == 0 or neg.sum() == 0:
            continue
        for metric, value in from_counts(np.ascontiguousarray(pos), np.ascontiguousarray(neg)).items():
            values[f"{metric}_{name}"] = value
    return values


def write_job(folder, out: EvalOutputs, table: pd.DataFrame, record: dict) -> None:
    """Write every artifact of one job atomically, then DONE (with `record`, e.g. seeds and timings)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE).unlink(missing_ok=True)
    if out.confusion is not None:
        with atomic_path(folder / "confusion.npy") as tmp:
            np.save(tmp, out.confusion)
        with atomic_path(folder / "per_image_confusion.npy") as tmp:
            np.save(tmp, out.per_image_confusion)
    if out.calib is not None:
        with atomic_path(folder / "calib_sample.npz") as tmp:
            np.savez(tmp, logits=out.calib["logits"].astype(np.float32), labels=out.calib["labels"],
                     image_index=out.calib["image_index"].astype(np.int32), features=out.features,
                     image_ids=np.asarray(out.image_ids, dtype=str), seed=record.get("seed", -1),
                     pixels_per_image=record.get("calib_pixels_per_image", -1))
    if out.ood is not None:
        with atomic_path(folder / "ood_hist.npz") as tmp:
            np.savez(tmp, pooled=out.ood["pooled"], per_image=out.ood["per_image"],
                     scores=np.asarray(OOD_SCORES), ranges=np.asarray([OOD_RANGES[s] for s in OOD_SCORES]),
                     high_is_id=np.asarray([OOD_HIGH_IS_ID[s] for s in OOD_SCORES]),
                     image_ids=np.asarray(out.image_ids, dtype=str))
    with atomic_path(folder / "metrics.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(folder / "metrics.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_json_atomic(folder / DONE, record)


def load_results(root) -> pd.DataFrame:
    """All finished jobs' metric rows under `root` (any depth), as one table."""
    tables = [pd.read_parquet(p) for p in sorted(Path(root).rglob("metrics.parquet")) if is_done(p.parent)]
    if not tables:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(tables, ignore_index=True)
