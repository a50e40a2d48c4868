"""ACDC (adverse conditions): the real counterpart of the fog, night, rain and snow domains.

Cityscapes labelIds are read (``*_gt_labelIds.png``) and mapped to trainIds; images and labels are paired by
the frame name, never by sort order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthrel.conventions import LABEL_TO_TRAIN, NUM_LABEL_IDS
from synthrel.data.base import Item, SegDataset, id_table, pair_by_name, select_folders
from synthrel.data.io import lookup, read_label, require_dir
from synthrel.errors import DatasetError, unknown_name

CONDITIONS = ("fog", "night", "rain", "snow")
SPLITS = ("train", "val")
IMAGE_SUFFIX = "_rgb_anon.png"
LABEL_SUFFIX = "_gt_labelIds.png"
LAYOUT = """  rgb_anon/<condition>/<split>/<GOPRxxxx>/<name>_rgb_anon.png
  gt/<condition>/<split>/<GOPRxxxx>/<name>_gt_labelIds.png
(the archive nesting rgb_anon_trainvaltest/rgb_anon/... and gt_trainval/gt/... is accepted too)"""


def _first_dir(root: Path, candidates: tuple[str, ...]) -> Path | None:
    """The first existing folder among `candidates` (plain layout first, then the archive nesting)."""
    return next((root / c for c in candidates if (root / c).is_dir()), None)


class ACDCDataset(SegDataset):
    """One condition and split; `scenes` restricts it to those GOPR folders. The relis protocol tests on the
    train scenes and calibrates on the val scenes (synthrel/conf/dataset/protocol_splits.yaml)."""

    valid_label_ids = id_table(range(NUM_LABEL_IDS))

    def __init__(self, root: str | Path, condition: str, split: str = "train", scenes: list[str] | None = None,
                 name: str | None = None, root_key: str | None = None):
        if condition not in CONDITIONS:
            raise unknown_name("ACDC condition", condition, CONDITIONS, f"datasets.acdc_{condition}.condition")
        name = name or f"acdc_{condition}"
        if split not in SPLITS:
            raise unknown_name("ACDC split", split, SPLITS, f"datasets.{name}.split")
        root_key = root_key or f"datasets.{name}.root"
        root = require_dir(root, root_key, LAYOUT)
        rgb = _first_dir(root, ("rgb_anon", "rgb_anon_trainvaltest/rgb_anon"))
        gt = _first_dir(root, ("gt", "gt_trainval/gt"))
        if rgb is None or gt is None:
            missing = "rgb_anon" if rgb is None else "gt"
            raise DatasetError(f"ACDC root {root} has no {missing}/ folder; set `{root_key}` to the folder that "
                               f"holds\n{LAYOUT}")
        img_dir = require_dir(rgb / condition / split, root_key, LAYOUT)
        gt_dir = require_dir(gt / condition / split, root_key, LAYOUT)
        scenes = select_folders(img_dir, scenes, f"ACDC {condition}/{split} ({name})", "scenes")
        images = [p for s in scenes for p in img_dir.glob(f"{s}/*{IMAGE_SUFFIX}")]
        labels = [p for s in scenes for p in gt_dir.glob(f"{s}/*{LABEL_SUFFIX}")]
        pairs = pair_by_name(
            images, labels,
            lambda p: p.name[: -len(IMAGE_SUFFIX)],
            lambda p: p.name[: -len(LABEL_SUFFIX)],
            what=f"ACDC {condition}/{split} under {root}",
        )
        items = [Item(k, img, lab, meta={"scene": img.parent.name, "condition": condition})
                 for k, img, lab in pairs]
        super().__init__(name, items, root)

    def load_label(self, path: Path) -> np.ndarray:
        raw = read_label(path)
        self.check_ids(raw, path, self.valid_label_ids, "Cityscapes labelIds (0..33)")
        return lookup(LABEL_TO_TRAIN, raw)
