"""The one place for label and colour conventions.

Images are RGB uint8 (H, W, 3) everywhere inside synthrel; `rgb_to_bgr` is the single conversion used
at the boundary of libraries that want BGR (OpenCV writers, mmseg configs that set `bgr_to_rgb`).
Labels inside synthrel are Cityscapes trainIds (0..18) with IGNORE_INDEX for everything else.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

NUM_CLASSES = 19
IGNORE_INDEX = 255


class Label(NamedTuple):
    name: str
    id: int
    train_id: int
    color: tuple[int, int, int]


# The official Cityscapes table (cityscapesscripts/helpers/labels.py); trainId 255 = ignored.
CITYSCAPES_LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, (0, 0, 0)),
    Label("ego vehicle", 1, 255, (0, 0, 0)),
    Label("rectification border", 2, 255, (0, 0, 0)),
    Label("out of roi", 3, 255, (0, 0, 0)),
    Label("static", 4, 255, (0, 0, 0)),
    Label("dynamic", 5, 255, (111, 74, 0)),
    Label("ground", 6, 255, (81, 0, 81)),
    Label("road", 7, 0, (128, 64, 128)),
    Label("sidewalk", 8, 1, (244, 35, 232)),
    Label("parking", 9, 255, (250, 170, 160)),
    Label("rail track", 10, 255, (230, 150, 140)),
    Label("building", 11, 2, (70, 70, 70)),
    Label("wall", 12, 3, (102, 102, 156)),
    Label("fence", 13, 4, (190, 153, 153)),
    Label("guard rail", 14, 255, (180, 165, 180)),
    Label("bridge", 15, 255, (150, 100, 100)),
    Label("tunnel", 16, 255, (150, 120, 90)),
    Label("pole", 17, 5, (153, 153, 153)),
    Label("polegroup", 18, 255, (153, 153, 153)),
    Label("traffic light", 19, 6, (250, 170, 30)),
    Label("traffic sign", 20, 7, (220, 220, 0)),
    Label("vegetation", 21, 8, (107, 142, 35)),
    Label("terrain", 22, 9, (152, 251, 152)),
    Label("sky", 23, 10, (70, 130, 180)),
    Label("person", 24, 11, (220, 20, 60)),
    Label("rider", 25, 12, (255, 0, 0)),
    Label("car", 26, 13, (0, 0, 142)),
    Label("truck", 27, 14, (0, 0, 70)),
    Label("bus", 28, 15, (0, 60, 100)),
    Label("caravan", 29, 255, (0, 0, 90)),
    Label("trailer", 30, 255, (0, 0, 110)),
    Label("train", 31, 16, (0, 80, 100)),
    Label("motorcycle", 32, 17, (0, 0, 230)),
    Label("bicycle", 33, 18, (119, 11, 32)),
)
NUM_LABEL_IDS = 34  # labelIds 0..33; the license plate (-1) never appears in labelIds PNGs

CLASS_NAMES: tuple[str, ...] = tuple(
    lab.name for lab in sorted(CITYSCAPES_LABELS, key=lambda lab: lab.train_id) if lab.train_id != 255
)
PALETTE = np.array(
    [lab.color for lab in sorted(CITYSCAPES_LABELS, key=lambda lab: lab.train_id) if lab.train_id != 255],
    dtype=np.uint8,
)
LABEL_ID_COLORS = np.array([lab.color for lab in CITYSCAPES_LABELS], dtype=np.uint8)

# labelId -> trainId lookup over all uint8 values; ids outside 0..33 map to IGNORE_INDEX.
LABEL_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _lab in CITYSCAPES_LABELS:
    LABEL_TO_TRAIN[_lab.id] = _lab.train_id
TRAIN_TO_LABEL = np.zeros(256, dtype=np.uint8)  # trainId -> labelId; ignore -> 0 (unlabeled)
for _lab in CITYSCAPES_LABELS:
    if _lab.train_id != 255:
        TRAIN_TO_LABEL[_lab.train_id] = _lab.id

# IDD level3Ids -> Cityscapes trainIds. Terrain (9) and train (16) have no IDD source class.
IDD_LEVEL3_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _src, _dst in {0: 0, 2: 1, 22: 2, 14: 3, 15: 4, 20: 5, 19: 6, 18: 7, 24: 8, 25: 10, 4: 11, 5: 12,
                   9: 13, 10: 14, 11: 15, 6: 17, 7: 18}.items():
    IDD_LEVEL3_TO_TRAIN[_src] = _dst
IDD_NUM_LEVEL3_IDS = 27  # 0..26 are valid level3Ids; 255 is IDD's own void
IDD_ABSENT_TRAIN_IDS = (9, 16)

# Road-anomaly style OOD masks: 0 in-distribution, 1 OOD, 255 void.
OOD_ID = 1
# Dedicated labelId written for inpainted OOD objects in synthrel's own labelIds maps (outside 0..33,
# so it maps to the ignore trainId for segmentation metrics and to OOD for detection metrics).
OOD_LABEL_ID = 254


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes labelIds map (any int dtype) to trainIds (uint8, ignore = 255)."""
    return LABEL_TO_TRAIN[np.asarray(label_ids).astype(np.int64).clip(0, 255)]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """Colour a trainId map with the Cityscapes palette (ignore -> black)."""
    out = np.zeros((*train_ids.shape, 3), dtype=np.uint8)
    valid = train_ids < NUM_CLASSES
    out[valid] = PALETTE[train_ids[valid]]
    return out


def rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """Swap the channel order of an (H, W, 3) image; the only RGB/BGR conversion in synthrel."""
    return np.ascontiguousarray(image[..., ::-1])


bgr_to_rgb = rgb_to_bgr
