"""Real OOD-detection sets: Road Anomaly, SegmentMeIfYouCan (RA21 / RO21) and Fishyscapes Lost & Found.

They carry no semantic labels (``label`` is None); ``ood`` is 0 in-distribution, 1 OOD, 255 void.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synthrel.data.base import Item, SegDataset, id_table, pair_by_name
from synthrel.data.io import read_label, require_dir
from synthrel.errors import DatasetError, unknown_name

ROAD_ANOMALY_LAYOUT = """  frames/<name>.jpg
  frames/<name>.labels/labels_semantic.png   (2 = anomaly)
(or the RbA layout RoadAnomaly_jpg/frame_list.json + RoadAnomaly_jpg/frames/...)"""

SMIYC_TRACKS = {"anomaly": "smiyc_ra21", "obstacle": "smiyc_ro21"}
SMIYC_LAYOUT = """  images/validation<N>.{jpg,png,webp}
  labels_masks/validation<N>_labels_semantic.png   (0 in-distribution, 1 OOD, 255 void)"""
SMIYC_IMAGE_EXTS = (".jpg", ".png", ".webp")
SMIYC_LABEL_SUFFIX = "_labels_semantic.png"

FS_LAF_LAYOUT = """  images/<name>.png   (the Lost & Found frames Fishyscapes labels, e.g. RbA's laf_images)
  labels/<name>.png   (0 in-distribution, 1 OOD, 255 void)"""

OOD_MASK_IDS = id_table((0, 1))


class RoadAnomalyDataset(SegDataset):
    """Road Anomaly (Lis et al. 2019). Labels follow RbA: value 2 is the anomaly and every other value is
    in-distribution (RbA's RoadAnomaly has ``ood_indices=[2]`` and no invalid indices)."""

    ANOMALY_VALUE = 2

    def __init__(self, root: str | Path, name: str = "road_anomaly", root_key: str = "datasets.road_anomaly.root"):
        root = require_dir(root, root_key, ROAD_ANOMALY_LAYOUT)
        base = root / "RoadAnomaly_jpg" if (root / "RoadAnomaly_jpg").is_dir() else root
        frames_dir = require_dir(base / "frames", root_key, ROAD_ANOMALY_LAYOUT)
        frame_list = base / "frame_list.json"
        if frame_list.exists():
            images = [frames_dir / f for f in json.loads(frame_list.read_text())]
            absent = [p for p in images if not p.exists()]
            if absent:
                raise DatasetError(f"{frame_list} lists {absent[0]} ({len(absent)} listed frame(s) missing)")
            labels = [q for q in (frames_dir / f"{p.stem}.labels" / "labels_semantic.png" for p in images)
                      if q.exists()]
        else:
            images = [p for ext in ("*.jpg", "*.png") for p in frames_dir.glob(ext)]
            labels = list(frames_dir.glob("*.labels/labels_semantic.png"))
        pairs = pair_by_name(images, labels, lambda p: p.stem, lambda p: p.parent.name[: -len(".labels")],
                             what=f"Road Anomaly under {root}")
        super().__init__(name, [Item(k, img, ood=lab) for k, img, lab in pairs], root)

    def load_ood(self, path: Path) -> np.ndarray:
        return (read_label(path, channel=0) == self.ANOMALY_VALUE).astype(np.uint8)


class SMIYCDataset(SegDataset):
    """SegmentMeIfYouCan validation images with labels (RoadAnomaly21 or RoadObstacle21 track)."""

    def __init__(self, root: str | Path, track: str = "anomaly", name: str | None = None,
                 root_key: str | None = None):
        if track not in SMIYC_TRACKS:
            raise unknown_name("SMIYC track", track, SMIYC_TRACKS, f"datasets.{name or 'smiyc_ra21'}.track")
        name = name or SMIYC_TRACKS[track]
        root_key = root_key or f"datasets.{name}.root"
        root = require_dir(root, root_key, SMIYC_LAYOUT)
        images = [p for p in require_dir(root / "images", root_key, SMIYC_LAYOUT).glob("validation*")
                  if p.suffix.lower() in SMIYC_IMAGE_EXTS]
        labels = list(require_dir(root / "labels_masks", root_key, SMIYC_LAYOUT).glob(
            f"validation*{SMIYC_LABEL_SUFFIX}"))
        pairs = pair_by_name(images, labels, lambda p: p.stem, lambda p: p.name[: -len(SMIYC_LABEL_SUFFIX)],
                             what=f"SMIYC {track} track under {root}")
        super().__init__(name, [Item(k, img, ood=lab, meta={"track": track}) for k, img, lab in pairs], root)

    def load_ood(self, path: Path) -> np.ndarray:
        raw = read_label(path, channel=0)
        self.check_ids(raw, path, OOD_MASK_IDS, "OOD mask (0, 1, 255)")
        return raw


class FishyscapesLAFDataset(SegDataset):
    """Fishyscapes Lost & Found validation: Lost & Found frames with the Fishyscapes OOD labels."""

    def __init__(self, root: str | Path, name: str = "fs_lost_and_found",
                 root_key: str = "datasets.fs_lost_and_found.root"):
        root = require_dir(root, root_key, FS_LAF_LAYOUT)
        images = [p for ext in ("*.png", "*.jpg") for p in
                  require_dir(root / "images", root_key, FS_LAF_LAYOUT).glob(ext)]
        labels = list(require_dir(root / "labels", root_key, FS_LAF_LAYOUT).glob("*.png"))
        pairs = pair_by_name(images, labels, lambda p: p.stem, lambda p: p.stem,
                             what=f"Fishyscapes Lost & Found under {root}")
        super().__init__(name, [Item(k, img, ood=lab) for k, img, lab in pairs], root)

    def load_ood(self, path: Path) -> np.ndarray:
        raw = read_label(path, channel=0)
        self.check_ids(raw, path, OOD_MASK_IDS, "OOD mask (0, 1, 255)")
        return raw
