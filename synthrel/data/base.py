"""The dataset interface every reader implements.

A dataset is a list of `Item`s (paired by name, never by sort order) and returns samples as dicts:
``{"id": str, "image": RGB uint8 (H, W, 3), "label": trainIds uint8 (H, W) or None,
"ood": uint8 (H, W) with 0 in-distribution / 1 OOD / 255 void, or None}``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from synthrel.conventions import IGNORE_INDEX
from synthrel.data.io import lookup, read_image, read_label
from synthrel.errors import DatasetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    id: str
    image: Path
    label: Path | None = None
    ood: Path | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def checked_size(label: np.ndarray, path: Path, size: tuple[int, int], image: Path) -> np.ndarray:
    """`label` when it is (H, W) = `size`, the size of `image`; else an error naming both files."""
    if label.shape != tuple(size):
        raise DatasetError(
            f"size mismatch: label {path} is {label.shape[1]}x{label.shape[0]} but its image {image} is "
            f"{size[1]}x{size[0]} (W x H); expected the same size"
        )
    return label


def _by_key(paths: Iterable[Path], key: Callable[[Path], str], what: str, kind: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(paths):
        other = found.setdefault(key(path), path)
        if other != path:
            raise DatasetError(f"{what}: {kind}s {other} and {path} have the same item id {key(path)!r}; expected "
                               "one file per id (rename or remove one of them)")
    return found


def pair_by_name(
    images: Iterable[Path],
    labels: Iterable[Path],
    image_key: Callable[[Path], str],
    label_key: Callable[[Path], str],
    what: str,
) -> list[tuple[str, Path, Path]]:
    """Pair images and labels by their common key; an unpaired file, or two files with one key (the same name in
    two city folders: item ids would collide), is an error."""
    by_image = _by_key(images, image_key, what, "image")
    by_label = _by_key(labels, label_key, what, "label")
    missing_label = sorted(set(by_image) - set(by_label))
    missing_image = sorted(set(by_label) - set(by_image))
    if missing_label:
        k = missing_label[0]
        raise DatasetError(
            f"{what}: image {by_image[k]} has no label ({len(missing_label)} image(s) without label; "
            f"expected the label file for key {k!r})"
        )
    if missing_image:
        k = missing_image[0]
        raise DatasetError(
            f"{what}: label {by_label[k]} has no image ({len(missing_image)} label(s) without image; "
            f"expected the image file for key {k!r})"
        )
    return [(k, by_image[k], by_label[k]) for k in sorted(by_image)]


class SegDataset(Dataset):
    """Base reader: subclasses fill `self.items` and implement `load_label` (file -> trainIds)."""

    #: train ids that the dataset cannot contain (excluded from its mIoU), e.g. IDD's terrain and train.
    absent_classes: tuple[int, ...] = ()
    #: the set of raw ids allowed in label files, checked on read.
    valid_label_ids: np.ndarray | None = None

    def __init__(self, name: str, items: list[Item], root: Path):
        if not items:
            raise DatasetError(f"dataset {name!r} under {root} is empty: no image/label pairs were found")
        self.name = name
        self.items = items
        self.root = Path(root)

    @property
    def has_labels(self) -> bool:
        return self.items[0].label is not None

    @property
    def has_ood(self) -> bool:
        return self.items[0].ood is not None

    def __len__(self) -> int:
        return len(self.items)

    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    def fingerprint(self) -> str:
        """Identity of the data a result was computed from: every file's path, size and modification time, so
        a changed root, an added, removed or rewritten file gives another fingerprint (results are redone)."""
        digest = hashlib.sha256(f"{type(self).__name__}|{self.name}".encode())
        for item in self.items:
            for path in (item.image, item.label, item.ood):
                if path is not None:
                    stat = Path(path).stat()
                    digest.update(f"|{item.id}|{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]

    def load_label(self, path: Path) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_ood(self, path: Path) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        image = read_image(item.image)
        sample = {"id": item.id, "image": image, "label": None, "ood": None}
        if item.label is not None:
            sample["label"] = checked_size(self.load_label(item.label), item.label, image.shape[:2], item.image)
        if item.ood is not None:
            sample["ood"] = checked_size(self.load_ood(item.ood), item.ood, image.shape[:2], item.image)
        return sample

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of item `index`'s image, from its header."""
        with Image.open(self.items[index].image) as im:
            return im.height, im.width

    def check_pair_size(self, index: int) -> tuple[int, int]:
        """(H, W) of item `index`, read from the headers, once its label is known to be of its image's size
        (a stage that plans crops from the image size checks this before it writes anything)."""
        item = self.items[index]
        with Image.open(item.label) as im:
            label_size = im.height, im.width
        size = self.image_size(index)
        checked_size(np.broadcast_to(np.uint8(0), label_size), item.label, size, item.image)
        return size

    def check_ids(self, raw: np.ndarray, path: Path, valid: np.ndarray, what: str) -> None:
        """Raise if `raw` holds ids outside `valid` (a boolean table over 0..255)."""
        if not lookup((~valid).astype(np.uint8), raw).any():
            return
        bad = np.unique(raw[~valid[raw]])
        if bad.size:
            raise DatasetError(
                f"label {path} holds ids {bad.tolist()[:10]} outside the {what} id set "
                f"(valid: {np.flatnonzero(valid).tolist()}); is this the right label file type?"
            )


#: raw label ids from 19 up: in labelIds (vegetation 21, sky 23, person 24, car 26, ...) and IDD level3Ids they
#: are in nearly every street scene; a trainIds file (0..18, 255) never holds one
_IDS_BEYOND_TRAIN_IDS = slice(19, 34)


def check_label_encoding(dataset: SegDataset, n_files: int = 8, key: str = "stages.evaluate.label_check") -> None:
    """Refuse label files that look like trainIds under a labelIds (or level3Ids) name: trainIds 0..18 are
    valid labelIds, so they would be read without error and give a plausible, wrong mIoU (0.76 on the demo).

    Reads up to `n_files` labels spread over the set; none holding any id from 19 up is the tell.
    """
    table = getattr(dataset, "valid_label_ids", None)
    if table is None or not table[_IDS_BEYOND_TRAIN_IDS].any() or not dataset.has_labels:
        return
    picks = np.unique(np.linspace(0, len(dataset.items) - 1, min(n_files, len(dataset.items))).astype(int))
    seen, evaluable = set(), False
    for i in picks:
        path = dataset.items[i].label
        seen.update(np.unique(read_label(path)).tolist())
        evaluable = evaluable or bool((dataset.load_label(path) != IGNORE_INDEX).any())
    if not evaluable:
        return  # void labels (no class at all): the evaluation refuses them as "no evaluable pixel"
    if not seen & set(range(19, 34)):
        raise DatasetError(
            f"dataset {dataset.name!r} under {dataset.root}: {len(picks)} label file(s) (e.g. "
            f"{dataset.items[picks[0]].label.name}) hold only ids {sorted(seen)}, none from 19 up (vegetation, sky, "
            "person, car...): these look like trainIds saved under the raw-id file name, which would be read as "
            f"the wrong classes. Save the raw ids (labelIds / level3Ids), or set `{key}=false` if these labels "
            "really hold none of those classes")


def select_folders(parent: Path, wanted: Iterable[str] | None, what: str, key: str,
                   require_all: bool = True) -> list[str]:
    """Sub-folders (cities, scenes) of `parent` to read: all of them, or the `wanted` ones.

    A protocol split names its folders (e.g. relis' 37 IDD test scenes), so a listed folder that is absent
    means an incomplete download: an error, or with `require_all=False` a warning (partial data, the demo).
    """
    if wanted is None:
        return sorted(p.name for p in parent.iterdir() if p.is_dir())
    wanted = [str(w) for w in wanted]
    missing = [w for w in wanted if not (parent / w).is_dir()]
    if missing and require_all:
        raise DatasetError(
            f"{what}: {len(missing)} of the {len(wanted)} {key} listed are missing under {parent}, e.g. "
            f"{missing[:5]}; expected a folder per listed entry (incomplete download?)"
        )
    if missing:
        log.warning("%s: %d of the %d %s listed are absent under %s and skipped: %s", what, len(missing),
                    len(wanted), key, parent, missing)
    return [w for w in wanted if w not in missing]


def id_table(valid_ids: Iterable[int], extra=(IGNORE_INDEX,)) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(valid_ids)] = True
    table[list(extra)] = True
    return table


def collate_samples(batch: list[dict]) -> list[dict]:
    """DataLoader collate that keeps samples of different sizes as a list."""
    return batch
