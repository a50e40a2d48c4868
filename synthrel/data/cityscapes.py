"""Cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png + gtFine/<split>/<city>/*_gtFine_labelIds.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthrel.conventions import LABEL_TO_TRAIN, NUM_LABEL_IDS
from synthrel.data.base import Item, SegDataset, checked_size, id_table, pair_by_name, select_folders
from synthrel.data.io import lookup, read_label, require_dir, require_split

LAYOUT = """  leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png"""


class CityscapesDataset(SegDataset):
    valid_label_ids = id_table(range(NUM_LABEL_IDS))

    """`cities` restricts the split to those city folders (relis protocol: test = frankfurt, calibration =
    munster + lindau of val; synthrel/conf/dataset/protocol_splits.yaml); a listed city that is absent is an error."""

    def __init__(self, root: str | Path, split: str = "val", cities: list[str] | None = None,
                 name: str = "cityscapes", root_key: str = "datasets.cityscapes.root"):
        root = require_dir(root, root_key, LAYOUT)
        split_key = f"datasets.{name}.split"
        img_dir = require_split(root / "leftImg8bit", split, split_key, root_key, LAYOUT)
        gt_dir = require_split(root / "gtFine", split, split_key, root_key, LAYOUT)
        cities = select_folders(img_dir, cities, f"Cityscapes {split} ({name})", "cities")
        images = [p for c in cities for p in img_dir.glob(f"{c}/*_leftImg8bit.png")]
        labels = [p for c in cities for p in gt_dir.glob(f"{c}/*_gtFine_labelIds.png")]
        pairs = pair_by_name(
            images, labels,
            lambda p: p.name[: -len("_leftImg8bit.png")],
            lambda p: p.name[: -len("_gtFine_labelIds.png")],
            what=f"Cityscapes {split} under {root}",
        )
        items = [Item(k, img, lab, meta={"city": img.parent.name}) for k, img, lab in pairs]
        super().__init__(name, items, root)

    def load_label(self, path: Path) -> np.ndarray:
        raw = read_label(path)
        self.check_ids(raw, path, self.valid_label_ids, "Cityscapes labelIds (0..33)")
        return lookup(LABEL_TO_TRAIN, raw)

    def load_label_ids(self, index: int) -> np.ndarray:
        """The raw labelIds map (0..33), which ControlNet conditioning uses."""
        item = self.items[index]
        raw = read_label(item.label)
        self.check_ids(raw, item.label, self.valid_label_ids, "Cityscapes labelIds (0..33)")
        return checked_size(raw, item.label, self.image_size(index), item.image)
