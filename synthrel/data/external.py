"""An external generator's output (TSIT or any other method): a folder of images paired with Cityscapes label maps.

Pairing is by name, never by order: an image `<key><image_suffix>` (searched recursively under `images`) goes
with the label `<key><label_suffix>` (searched recursively under `labels`), where `<key>` is usually the
Cityscapes frame id (`frankfurt_000000_000294`). Every image must have exactly one label; labels without an image
are allowed (a generator may translate a subset of Cityscapes val). Files under `images` that do not end with
`image_suffix`, images without a label and keys found twice are errors that list the files. Labels are
Cityscapes labelIds (0..33); a label of another size than its image is resized to it with nearest neighbours
(generators often write a smaller frame), and that is recorded in the item's meta.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from synthrel.conventions import LABEL_TO_TRAIN, NUM_LABEL_IDS
from synthrel.data.base import Item, SegDataset, id_table
from synthrel.data.io import lookup, read_image, read_label, require_dir
from synthrel.errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
LAYOUT = """  <images>/**/<key><image_suffix>     e.g. frankfurt_000000_000294_leftImg8bit.png (any sub-folders)
  <labels>/**/<key><label_suffix>     e.g. Cityscapes gtFine/val/<city>/frankfurt_000000_000294_gtFine_labelIds.png"""


def _listing(paths, limit: int = 10) -> str:
    paths = sorted(str(p) for p in paths)
    return ", ".join(paths[:limit]) + (f" ... ({len(paths)} in all)" if len(paths) > limit else "")


class ExternalDataset(SegDataset):
    """Images written by another method, paired by name with Cityscapes labelIds maps."""

    valid_label_ids = id_table(range(NUM_LABEL_IDS))

    def __init__(self, images: str | Path, labels: str | Path, name: str = "external",
                 image_suffix: str = "_leftImg8bit.png", label_suffix: str = "_gtFine_labelIds.png",
                 key: str = "generator.images"):
        images = require_dir(images, key, LAYOUT)
        labels = require_dir(labels, "generator.labels", LAYOUT)
        files = sorted(p for p in images.rglob("*") if p.is_file() and not p.name.startswith("."))
        misnamed = [p for p in files if not p.name.endswith(image_suffix)]
        if misnamed:
            raise DatasetError(
                f"external generator {name!r}: {len(misnamed)} file(s) under {images} (config key `{key}`) do not "
                f"end with image_suffix {image_suffix!r}, so they cannot be paired with a label: {_listing(misnamed)}. "
                "Rename them <key><image_suffix> (key = the Cityscapes frame id of the label map they were made from), "
                "set `generator.image_suffix`, or move other files out of the folder"
            )
        by_key: dict[str, list[Path]] = {}
        for p in files:
            by_key.setdefault(p.name[: -len(image_suffix)], []).append(p)
        twice = [p for ps in by_key.values() if len(ps) > 1 for p in ps]
        if twice:
            raise DatasetError(f"external generator {name!r}: several images for one key under {images}: "
                               f"{_listing(twice)}")
        label_by_key: dict[str, list[Path]] = {}
        for p in labels.rglob(f"*{label_suffix}"):
            label_by_key.setdefault(p.name[: -len(label_suffix)], []).append(p)
        unpaired = [ps[0] for k, ps in by_key.items() if k not in label_by_key]
        if unpaired:
            raise DatasetError(
                f"external generator {name!r}: {len(unpaired)} image(s) under {images} have no label "
                f"<key>{label_suffix} under {labels} (config key `generator.labels`): {_listing(unpaired)}"
            )
        ambiguous = [p for k in by_key for p in label_by_key[k] if len(label_by_key[k]) > 1]
        if ambiguous:
            raise DatasetError(f"external generator {name!r}: several labels for one key under {labels}: "
                               f"{_listing(ambiguous)}")
        items = [Item(k, by_key[k][0], label_by_key[k][0], meta={"city": k.split("_")[0]}) for k in sorted(by_key)]
        if not items:
            raise DatasetError(f"external generator {name!r}: no image ending with {image_suffix!r} under {images} "
                               f"(config key `{key}`); expected\n{LAYOUT}")
        super().__init__(name, items, images)

    def _label_ids(self, index: int) -> np.ndarray:
        item = self.items[index]
        raw = read_label(item.label)
        self.check_ids(raw, item.label, self.valid_label_ids, "Cityscapes labelIds (0..33)")
        with Image.open(item.image) as im:
            size = im.size  # (W, H)
        if raw.shape[::-1] != size:
            raw = np.asarray(Image.fromarray(raw).resize(size, Image.NEAREST))
        return raw

    def load_label_ids(self, index: int) -> np.ndarray:
        """The raw labelIds map at the image's size."""
        return self._label_ids(index)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        image = read_image(item.image)
        label_ids = self._label_ids(index)
        if label_ids.shape != image.shape[:2]:
            raise DatasetError(f"{item.label}: label {label_ids.shape} does not match image {item.image} "
                               f"{image.shape[:2]}")
        return {"id": item.id, "image": image, "label": lookup(LABEL_TO_TRAIN, label_ids), "ood": None}
