"""Calibration samples written by the evaluation engine (calib_sample.npz), and their pooling.

Each file holds subsampled pixels of one (model, dataset): logits float32 (N, 19), labels uint8 (N,) trainIds
with ignore already dropped, image_index int32 (N,) into the image_ids (the dataset's own ids, which the
calibrate stage compares to keep calibration and test images apart) and the per-image features (n_images, C),
which are empty (0 rows) unless the evaluation took them for cluster TS (`stages.evaluate.features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthrel.errors import DatasetError
from synthrel.jobs import load_npz_artifact

CALIB_SAMPLE_FILE = "calib_sample.npz"
REQUIRED_KEYS = ("logits", "labels", "image_index", "features", "image_ids")
REPAIR = "Re-run the evaluate stage on this (model, dataset) pair with force=true"


@dataclass
class CalibSample:
    logits: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    features: np.ndarray
    image_ids: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> CalibSample:
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"calibration sample {path} is missing: run the evaluate stage on this dataset first")
        f = load_npz_artifact(path, "a calibration sample of the evaluate stage", REPAIR, REQUIRED_KEYS,
                              only=REQUIRED_KEYS)
        sample = cls(
            logits=f["logits"],
            labels=f["labels"],
            image_index=f["image_index"].astype(np.int64),
            features=f["features"],
            image_ids=f["image_ids"],
        )
        if sample.logits.ndim != 2 or not len(sample.logits) == len(sample.labels) == len(sample.image_index):
            raise DatasetError(
                f"{path}: logits {sample.logits.shape}, labels {sample.labels.shape} and image_index "
                f"{sample.image_index.shape} do not describe the same pixels"
            )
        if len(sample.labels) and int(sample.labels.max()) >= sample.logits.shape[1]:
            raise DatasetError(f"{path}: labels hold {int(sample.labels.max())}, outside the "
                               f"{sample.logits.shape[1]} classes; ignore pixels must be dropped before TS")
        if sample.has_features and len(sample.image_ids) != len(sample.features):
            raise DatasetError(f"{path}: {len(sample.image_ids)} image ids for {len(sample.features)} feature rows")
        if len(sample.image_index) and sample.image_index.max() >= len(sample.image_ids):
            raise DatasetError(f"{path}: image_index points past the {len(sample.image_ids)} images")
        return sample

    @classmethod
    def concat(cls, samples: list[CalibSample]) -> CalibSample:
        """Pool several sets (e.g. synthetic domains): image indices are shifted to the stacked features."""
        offsets = np.cumsum([0] + [s.n_images for s in samples[:-1]])
        with_features = [s.has_features for s in samples]
        return cls(
            logits=np.concatenate([s.logits for s in samples]),
            labels=np.concatenate([s.labels for s in samples]),
            image_index=np.concatenate([s.image_index + o for s, o in zip(samples, offsets, strict=True)]),
            features=(np.concatenate([s.features for s in samples]) if all(with_features)
                      else np.zeros((0, 0), np.float32)),
            image_ids=np.concatenate([s.image_ids for s in samples]),
        )

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def has_features(self) -> bool:
        return len(self.features) > 0


def load_image_ids(path: str | Path) -> set[str]:
    """The image ids of one calib_sample.npz, without reading its logits."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"calibration sample {path} is missing: run the evaluate stage on this dataset first")
    f = load_npz_artifact(path, "a calibration sample of the evaluate stage with image ids", REPAIR,
                          ("image_ids",), only=("image_ids",))
    return set(f["image_ids"].tolist())
