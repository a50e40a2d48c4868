"""IDD (India Driving Dataset): the real counterpart of the "india" domain.

Labels are the level3Ids PNGs that the IDD toolkit writes (``createLabels.py --id-type level3Ids``), mapped to
Cityscapes trainIds; terrain and train have no IDD source class and are excluded from IDD's mIoU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthrel.conventions import IDD_ABSENT_TRAIN_IDS, IDD_LEVEL3_TO_TRAIN, IDD_NUM_LEVEL3_IDS
from synthrel.data.base import Item, SegDataset, id_table, pair_by_name, select_folders
from synthrel.data.io import read_label, require_dir, require_split
from synthrel.errors import DatasetError

IMAGE_SUFFIXES = ("_leftImg8bit.png", "_leftImg8bit.jpg")
LABEL_SUFFIX = "_gtFine_labellevel3Ids.png"
POLYGON_SUFFIX = "_gtFine_polygons.json"
LAYOUT = """  leftImg8bit/<split>/<scene>/<name>_leftImg8bit.png (or .jpg)
  gtFine/<split>/<scene>/<name>_gtFine_labellevel3Ids.png"""
CREATE_LABELS = ("python preperation/createLabels.py --datadir <IDD_Segmentation> --id-type level3Ids "
                 "(IDD toolkit, github.com/AutoNUE/public-code)")


def _strip(name: str, suffixes: tuple[str, ...]) -> str:
    return next(name[: -len(s)] for s in suffixes if name.endswith(s))


class IDDDataset(SegDataset):
    """One split; `scenes` restricts it to those scene folders (relis protocol: test = 37 listed train scenes,
    calibration = all val scenes; synthrel/conf/dataset/protocol_splits.yaml). A listed scene that is absent is an
    error unless `require_all_scenes` is false (the demo data holds only a few of the 37)."""

    absent_classes = IDD_ABSENT_TRAIN_IDS
    valid_label_ids = id_table(range(IDD_NUM_LEVEL3_IDS))

    def __init__(self, root: str | Path, split: str = "val", scenes: list[str] | None = None,
                 name: str = "idd", root_key: str = "datasets.idd.root", require_all_scenes: bool = True):
        root = require_dir(root, root_key, LAYOUT)
        split_key = f"datasets.{name}.split"
        img_dir = require_split(root / "leftImg8bit", split, split_key, root_key, LAYOUT)
        gt_dir = require_split(root / "gtFine", split, split_key, root_key, LAYOUT)
        scenes = select_folders(img_dir, scenes, f"IDD {split} ({name})", "scenes", require_all_scenes)
        images = [p for s in scenes for suffix in IMAGE_SUFFIXES for p in img_dir.glob(f"{s}/*{suffix}")]
        labels = [p for s in scenes for p in gt_dir.glob(f"{s}/*{LABEL_SUFFIX}")]
        self._require_level3_labels(images, labels, gt_dir)
        pairs = pair_by_name(
            images, labels,
            lambda p: f"{p.parent.name}/{_strip(p.name, IMAGE_SUFFIXES)}",
            lambda p: f"{p.parent.name}/{p.name[: -len(LABEL_SUFFIX)]}",
            what=f"IDD {split} under {root}",
        )
        items = [Item(k.replace("/", "_"), img, lab, meta={"scene": img.parent.name}) for k, img, lab in pairs]
        super().__init__(name, items, root)

    @staticmethod
    def _require_level3_labels(images: list[Path], labels: list[Path], gt_dir: Path) -> None:
        """IDD ships polygons only: point to the toolkit when the level3Ids PNGs were never generated."""
        have = {(p.parent.name, p.name[: -len(LABEL_SUFFIX)]) for p in labels}
        for image in images:
            key = (image.parent.name, _strip(image.name, IMAGE_SUFFIXES))
            polygons = gt_dir / key[0] / f"{key[1]}{POLYGON_SUFFIX}"
            if key not in have and polygons.exists():
                raise DatasetError(
                    f"IDD label {gt_dir / key[0] / (key[1] + LABEL_SUFFIX)} is missing but {polygons} exists: "
                    f"generate the level3Ids PNGs first with {CREATE_LABELS}"
                )

    def load_label(self, path: Path) -> np.ndarray:
        raw = read_label(path)
        self.check_ids(raw, path, self.valid_label_ids, "IDD level3Ids (0..26, 255)")
        return IDD_LEVEL3_TO_TRAIN[raw]
