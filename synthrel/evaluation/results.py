"""The results store: one folder per (zoo, model, dataset) job, a tidy long metrics table, a DONE marker.

Layout: `<root>/<zoo>/<model>/<dataset key>/{metrics.parquet, metrics.csv, confusion.npy, calib_sample.npz,
ood_per_image.npz, DONE}`. Values are fractions in [0, 1] (reports multiply by 100); `cls` is "" for
dataset-level rows and the class name for per-class IoU.

OOD rows (datasets with OOD masks), per score s in msp / max_logit / entropy (synthrel.metrics.ood):
`auroc_s`, `ap_s`, `fpr95_s` pooled over the dataset in the RbA convention (spec 3.4 B, void left out);
`img_auroc_s`, `img_fpr95_s`, `img_aupr_in_s`, `img_aupr_out_s`, the mean of GenVal's per-image metrics (3.4 A,
every pixel counts) over the images that hold both OOD and ID pixels, whose number is the row's `n_images`;
`n_images_without_ood` and `n_images_only_ood` count the images left out of those means
(`synthrel.metrics.ood.dataset_rows`). Every file is written atomically and DONE last,
so a folder without DONE is an interrupted job that is redone. DONE records each file's size and SHA-256
(`files`): a job whose files were since deleted, truncated or changed is redone too (`is_done`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from synthrel.conventions import CLASS_NAMES
from synthrel.evaluation.engine import EvalOutputs
from synthrel.jobs import (
    FILES_KEY,
    ArtifactError,
    atomic_path,
    changed_settings,
    damaged_files,
    describe_changes,
    describe_damage,
    file_records,
    path_identity,
    read_json_artifact,
    read_parquet_artifact,
    write_json_atomic,
)
from synthrel.metrics.calibration import ece_from_bins
from synthrel.metrics.ood import dataset_rows
from synthrel.metrics.segmentation import iou_per_class, mean_iou, pixel_accuracy

log = logging.getLogger(__name__)

COLUMNS = ["model", "family", "dataset", "domain", "generator", "metric", "cls", "value", "n_images", "profile"]
DONE = "DONE"
#: left by synthrel versions whose OOD metrics came from score histograms: such a job is evaluated again
LEGACY_OOD_HISTOGRAMS = "ood_hist.npz"


def job_dir(root, zoo: str, model: str, dataset_key: str) -> Path:
    return Path(root) / zoo / model / dataset_key


REPAIR = "Evaluate this (model, dataset) pair again: re-run the evaluate stage on it (it redoes damaged pairs)"


def read_done(folder) -> dict:
    """A pair's DONE record (ArtifactError naming the file when it is not a JSON record)."""
    return read_json_artifact(Path(folder) / DONE, "an evaluate DONE record", REPAIR, keys=("job",))


def is_done(folder, expected: dict | None = None, verify: str = "size") -> bool:
    """A finished job; with `expected` (setting -> value, e.g. weights and dataset fingerprints, precision,
    seed), only if its DONE record holds the same values, so a changed checkpoint, dataset or setting is
    evaluated again instead of leaving a stale number in the tables; and only while every result file is as
    DONE recorded it (size; with verify="hash" also SHA-256). The log names what changed."""
    marker = Path(folder) / DONE
    if not marker.is_file():
        return False
    if (Path(folder) / LEGACY_OOD_HISTOGRAMS).is_file():
        log.info("%s: OOD metrics from the histograms of an older synthrel; evaluating again", folder)
        return False
    try:
        record = read_done(folder)
    except ArtifactError as error:
        log.warning("evaluating again: %s", error)
        return False
    changed = changed_settings(record, expected or {})
    if changed:
        log.info("%s: evaluating again, changed since the last run: %s", folder, describe_changes(changed))
        return False
    if FILES_KEY in record:
        damaged = damaged_files(folder, record[FILES_KEY], verify)
    else:  # DONE of an older synthrel: the metrics table must at least read
        try:
            read_parquet_artifact(Path(folder) / "metrics.parquet", "a metrics table", REPAIR, COLUMNS)
            damaged = {}
        except ArtifactError as error:
            damaged = {"metrics.parquet": str(error)}
    if damaged:
        log.warning("%s: evaluating again, result files missing, truncated or changed since they were written: %s",
                    folder, describe_damage(damaged))
        return False
    return True


def weights_fingerprint(checkpoint: str | None, config: str) -> str:
    """Identity of a model's weights: a local file by path, size and modification time; a URL by itself."""
    return path_identity(checkpoint or config)


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
        for metric, value, n_images in dataset_rows(out.ood):
            rows.append({**meta, "metric": metric, "cls": "", "value": float(value), "n_images": n_images})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_job(folder, out: EvalOutputs, table: pd.DataFrame, record: dict) -> None:
    """Write every artifact of one job atomically, then DONE (with `record`, e.g. seeds and timings)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE).unlink(missing_ok=True)
    (folder / LEGACY_OOD_HISTOGRAMS).unlink(missing_ok=True)
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
        with atomic_path(folder / "ood_per_image.npz") as tmp:
            np.savez(tmp, per_image=out.ood["per_image"], image_pixels=out.ood["image_pixels"],
                     scores=np.asarray(out.ood["scores"]), metrics=np.asarray(out.ood["metrics"]),
                     image_ids=np.asarray(out.image_ids, dtype=str))
    with atomic_path(folder / "metrics.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(folder / "metrics.csv") as tmp:
        table.to_csv(tmp, index=False)
    names = [*(("confusion.npy", "per_image_confusion.npy") if out.confusion is not None else ()),
             *(("calib_sample.npz",) if out.calib is not None else ()),
             *(("ood_per_image.npz",) if out.ood is not None else ()), "metrics.parquet", "metrics.csv"]
    written = [folder / name for name in names]
    write_json_atomic(folder / DONE, {**record, FILES_KEY: file_records(folder, written)})


def load_results(root) -> pd.DataFrame:
    """All finished jobs' metric rows under `root` (any depth), as one table."""
    tables = [read_parquet_artifact(p, "a metrics table", REPAIR, COLUMNS)
              for p in sorted(Path(root).rglob("metrics.parquet")) if is_done(p.parent)]
    if not tables:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(tables, ignore_index=True)
