"""Sets that synthrel writes itself: the generate stage's covariate-shift sets and the inpaint stage's OOD objects.

The layout lives only here: the stages call `write_item` / `write_ood_item`, which write each file atomically and
then append the item's record to ``manifest.jsonl``. Readers list items from the manifest, so an item whose
files were being written when the job was killed is never read.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np

from synthrel.conventions import (
    IGNORE_INDEX,
    LABEL_TO_TRAIN,
    NUM_LABEL_IDS,
    OOD_LABEL_ID,
    label_ids_to_train_ids,
)
from synthrel.data.base import Item, SegDataset, checked_size, id_table, pair_by_name
from synthrel.data.io import lookup, read_image, read_label, require_dir, write_png
from synthrel.errors import ConfigError, DatasetError
from synthrel.jobs import Manifest, check_readable, damaged_files, describe_damage, file_records

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
TRAIN_SUFFIX = "_gtFine_labelTrainIds.png"
SYNTHETIC_LAYOUT = """  leftImg8bit/<split>/<city>/<id>_leftImg8bit.png
  gtFine/<split>/<city>/<id>_gtFine_labelIds.png   (+ _gtFine_labelTrainIds.png)
  original/<split>/<city>/<id>_leftImg8bit.png     (the real image the label came from)
  manifest.jsonl                                    (one JSON record per finished image, key "id")"""
OOD_LAYOUT = """  images/<object_slug>/<id>.png
  labels/<object_slug>/<id>_labelIds.png   (Cityscapes labelIds, 254 on the object)
  masks/<object_slug>/<id>_mask.png        (0 / 255)
  manifest.jsonl                           (records with "id", "object_slug", "status": accepted | rejected)"""
OOD_STATUSES = ("accepted", "rejected")


def _check_label_ids(label_ids: np.ndarray, image: np.ndarray, what: str) -> np.ndarray:
    label_ids = np.asarray(label_ids)
    if label_ids.dtype != np.uint8 or label_ids.shape != image.shape[:2]:
        raise ValueError(f"{what}: labelIds must be uint8 of shape {image.shape[:2]}, got "
                         f"{label_ids.dtype} {label_ids.shape}")
    return label_ids


REMOVED = "removed"  # a manifest record {"id": ..., "removed": true}: the item was deleted (force=true, new settings)


def _latest_records(manifest: Manifest) -> dict[str, dict]:
    """The last record per id (a forced re-run appends a newer record for the same id); removed items left out."""
    latest = {r["id"]: r for r in manifest.read()}
    return {id: r for id, r in latest.items() if not r.get(REMOVED)}


def latest_records(root: str | Path) -> dict[str, dict]:
    """The items a set folder holds: its manifest's last record per id, removed ones left out."""
    return _latest_records(Manifest(Path(root) / MANIFEST))


def item_paths(root: str | Path, rec: dict) -> list[Path]:
    """The files of a recorded item of a synthetic or OOD-object set (whether it wrote an original or not)."""
    root, id = Path(root), rec["id"]
    if "object_slug" in rec:
        slug = rec["object_slug"]
        return [root / "images" / slug / f"{id}.png", root / "labels" / slug / f"{id}_labelIds.png",
                root / "masks" / slug / f"{id}_mask.png"]
    split, city = rec.get("split", "val"), rec.get("city", "")
    return [root / "leftImg8bit" / split / city / f"{id}{IMAGE_SUFFIX}",
            root / "gtFine" / split / city / f"{id}{LABEL_SUFFIX}",
            root / "gtFine" / split / city / f"{id}{TRAIN_SUFFIX}",
            root / "original" / split / city / f"{id}{IMAGE_SUFFIX}"]


def item_damage(root: str | Path, rec: dict, verify: str = "size") -> dict[str, str]:
    """{file: why} for the files of a recorded item that are missing, truncated or changed (see
    `synthrel.jobs.damaged_files`). A record of an older synthrel lacks sizes: its images must exist and decode."""
    if "files" in rec:
        return damaged_files(root, rec["files"], verify)
    from PIL import Image

    root, damaged = Path(root), {}
    paths = item_paths(root, rec)
    for path in paths[:3] if "object_slug" in rec else paths[:2]:  # the original and trainIds may not exist
        try:
            with Image.open(path) as im:
                im.load()
        except FileNotFoundError:
            damaged[str(path.relative_to(root))] = "missing"
        except (OSError, SyntaxError) as error:
            damaged[str(path.relative_to(root))] = f"does not decode ({error})"
    return damaged


def verified_records(root: str | Path, ids, verify: str, stage: str) -> dict[str, dict]:
    """`latest_records` of a set for a re-run: records of `ids` whose files are missing, truncated or changed are
    left out (the stage redoes those items), and the log names each of them."""
    records = latest_records(root)
    damaged = {id: why for id in ids if id in records and (why := item_damage(root, records[id], verify))}
    if damaged:
        log.warning("%s: redoing %d item(s) of %s whose files are missing, truncated or changed since they were "
                    "written (verify=%s)", stage, len(damaged), root, verify)
        for id, why in damaged.items():
            log.warning("%s: redoing %s: %s", stage, id, describe_damage(why))
    if any("files" not in records[id] for id in ids if id in records):
        log.info("%s: %s holds records of an older synthrel without file sizes: their images were checked by "
                 "decoding them (run once with force=true to record sizes and hashes)", stage, root)
    return {id: rec for id, rec in records.items() if id not in damaged}


def remove_items(root: str | Path, ids) -> int:
    """Delete items of a synthetic or OOD-object set (their files, then a `removed` manifest record each), e.g.
    items made with other settings that a forced re-run does not make again. Returns how many were removed."""
    root = Path(root)
    manifest = Manifest(root / MANIFEST)
    latest = _latest_records(manifest)
    removed = 0
    for id in ids:
        rec = latest.get(id)
        if rec is None:
            continue
        paths = item_paths(root, rec)
        manifest.append({"id": id, REMOVED: True})  # first: a kill in between leaves no listed item without files
        for path in paths:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def slugify(name: str) -> str:
    """File-name key of an object or domain name: 'polar bear' -> 'polar_bear'.

    Names of other characters (capitals, punctuation, non-ASCII) get a stable hash of the full text, so two
    names never share a key ('雪' and '雨' both lost every character before: their files overwrote each other).
    """
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if re.fullmatch(r"[a-z0-9]+([ _][a-z0-9]+)*", name):
        return slug
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else digest


def check_unique_keys(names, what: str, key: str) -> None:
    """Refuse names that share a file-name key ('polar bear' and 'polar_bear'), naming them and the config key."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(slugify(name), name)
        if other != name:
            raise ConfigError(f"{what} {other!r} and {name!r} (config key `{key}`) share the file-name key "
                              f"{slugify(name)!r}; their files would overwrite each other: rename one")


def check_folder_name(name: str, key: str) -> str:
    """A name used as a folder as it is: refuse what a file system cannot hold or would read as a path."""
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name.encode()) > 255:
        raise ConfigError(f"`{key}` is {name!r}, which cannot be a folder name (empty, '.', '..', a '/', a NUL or "
                          "over 255 bytes); choose another name")
    return name


def write_item(root: str | Path, id: str, city: str, image: np.ndarray, label_ids: np.ndarray,
               original: np.ndarray | None = None, split: str = "val", meta: dict | None = None) -> dict:
    """Write one aligned synthetic pair (image + Cityscapes labelIds) and record it in the manifest.

    `meta` (domain, seed, prompt...) goes into the manifest record, which is returned.
    """
    root = Path(root)
    label_ids = _check_label_ids(label_ids, image, f"synthetic item {id!r}")
    record = {**(meta or {}), "id": id, "city": city, "split": split}
    paths = item_paths(root, record)
    write_png(paths[0], np.asarray(image, dtype=np.uint8))
    write_png(paths[1], label_ids)
    write_png(paths[2], label_ids_to_train_ids(label_ids))
    if original is not None:
        write_png(paths[3], np.asarray(original, dtype=np.uint8))
    record["files"] = file_records(root, paths if original is not None else paths[:3])
    Manifest(root / MANIFEST).append(record)
    return record


class SyntheticDataset(SegDataset):
    """A generated covariate-shift set in the Cityscapes layout; items come from the manifest when present."""

    valid_label_ids = id_table(range(NUM_LABEL_IDS))

    def __init__(self, root: str | Path, split: str = "val", name: str = "synthetic",
                 root_key: str = "datasets.synthetic.root"):
        root = require_dir(root, root_key, SYNTHETIC_LAYOUT)
        check_readable(root, "synthetic set")
        img_dir = root / "leftImg8bit" / split
        gt_dir = root / "gtFine" / split
        manifest = Manifest(root / MANIFEST)
        if manifest.path.exists():
            items = []
            for rec in _latest_records(manifest).values():
                city = rec.get("city", "*")
                image = self._one(img_dir.glob(f"{city}/{rec['id']}{IMAGE_SUFFIX}"), manifest.path, rec["id"],
                                  img_dir / city / f"{rec['id']}{IMAGE_SUFFIX}")
                label = self._one(gt_dir.glob(f"{image.parent.name}/{rec['id']}{LABEL_SUFFIX}"), manifest.path,
                                  rec["id"], gt_dir / image.parent.name / f"{rec['id']}{LABEL_SUFFIX}")
                items.append(Item(rec["id"], image, label, meta=rec))
            items.sort(key=lambda it: it.id)
        else:
            pairs = pair_by_name(
                img_dir.glob(f"*/*{IMAGE_SUFFIX}"), gt_dir.glob(f"*/*{LABEL_SUFFIX}"),
                lambda p: p.name[: -len(IMAGE_SUFFIX)], lambda p: p.name[: -len(LABEL_SUFFIX)],
                what=f"synthetic set under {root}",
            )
            items = [Item(k, img, lab, meta={"city": img.parent.name}) for k, img, lab in pairs]
        super().__init__(name, items, root)

    @staticmethod
    def _one(found, manifest: Path, id: str, expected: Path) -> Path:
        found = list(found)
        if not found:
            raise DatasetError(f"{manifest} lists item {id!r} but {expected} does not exist "
                               f"(the files were deleted or moved after they were written)")
        return found[0]

    def load_label(self, path: Path) -> np.ndarray:
        raw = read_label(path)
        self.check_ids(raw, path, self.valid_label_ids, "Cityscapes labelIds (0..33)")
        return lookup(LABEL_TO_TRAIN, raw)


def write_ood_item(root: str | Path, id: str, object_name: str, image: np.ndarray, label_ids: np.ndarray,
                   mask: np.ndarray, status: str = "accepted", meta: dict | None = None) -> dict:
    """Write one inpainted OOD-object image, its labelIds (OOD_LABEL_ID where `mask` is set) and its mask,
    then record it in the manifest with its `status` (only accepted items are read back)."""
    if status not in OOD_STATUSES:
        raise ValueError(f"status must be one of {OOD_STATUSES}, got {status!r}")
    root = Path(root)
    slug = slugify(object_name)
    label_ids = _check_label_ids(label_ids, image, f"OOD item {id!r}").copy()
    on_object = np.asarray(mask) > 0
    label_ids[on_object] = OOD_LABEL_ID
    record = {**(meta or {}), "id": id, "object": object_name, "object_slug": slug, "status": status}
    paths = item_paths(root, record)
    write_png(paths[0], np.asarray(image, dtype=np.uint8))
    write_png(paths[1], label_ids)
    write_png(paths[2], on_object.astype(np.uint8) * 255)
    record["files"] = file_records(root, paths)
    Manifest(root / MANIFEST).append(record)
    return record


def read_item_list(path: str | Path) -> list[str]:
    """Item ids of a list file: one per line, blank lines and `#` comments ignored."""
    ids = [line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise DatasetError(f"item list {path} is empty (one accepted item id a line)")
    return ids


class OODObjectsDataset(SegDataset):
    """The inpainted OOD-object set: label = trainIds (the object ignored), ood = 1 on the object mask,
    0 on valid Cityscapes pixels, 255 on void pixels. With `item_list` (a file of item ids, e.g. Table 2's
    curated list) only the accepted items it lists; a listed id that is not an accepted item is an error."""

    valid_label_ids = id_table([*range(NUM_LABEL_IDS), OOD_LABEL_ID])
    valid_mask_values = id_table((0,), extra=(255,))

    def __init__(self, root: str | Path, objects: list[str] | None = None, name: str = "ood_objects",
                 root_key: str = "datasets.ood_objects.root", item_list: str | None = None):
        root = require_dir(root, root_key, OOD_LAYOUT)
        check_readable(root, "OOD-object set")
        if item_list is not None and not Path(item_list).is_file():
            raise DatasetError(f"{name}: item list {item_list} does not exist (datasets.{name}.item_list; "
                               "python -m synthrel.ood_detection.curated writes one to edit)")
        listed = set(read_item_list(item_list)) if item_list is not None else None
        manifest = Manifest(root / MANIFEST)
        if not manifest.path.exists():
            raise DatasetError(f"OOD-object set {root} has no {MANIFEST}; it is written by the inpaint stage "
                               f"with the layout\n{OOD_LAYOUT}")
        wanted = {slugify(o) for o in objects} if objects else None
        self._label_of_mask: dict[Path, Path] = {}
        items = []
        for rec in _latest_records(manifest).values():
            if rec.get("status") != "accepted" or (wanted and rec["object_slug"] not in wanted):
                continue
            slug, id = rec["object_slug"], rec["id"]
            paths = (root / "images" / slug / f"{id}.png", root / "labels" / slug / f"{id}_labelIds.png",
                     root / "masks" / slug / f"{id}_mask.png")
            absent = [p for p in paths if not p.exists()]
            if absent:
                raise DatasetError(f"{manifest.path} lists accepted item {id!r} but {absent[0]} does not exist")
            self._label_of_mask[paths[2]] = paths[1]
            items.append(Item(id, paths[0], label=paths[1], ood=paths[2], meta=rec))
        if listed is not None:
            unknown = sorted(listed - {it.id for it in items})
            if unknown:
                raise DatasetError(f"item list {item_list}: {len(unknown)} id(s) are not accepted items of {root}: "
                                   f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
            items = [it for it in items if it.id in listed]
        items.sort(key=lambda it: it.id)
        super().__init__(name, items, root)

    def _label_ids(self, path: Path) -> np.ndarray:
        raw = read_label(path)
        self.check_ids(raw, path, self.valid_label_ids, "Cityscapes labelIds with the OOD id 254")
        return raw

    def load_label(self, path: Path) -> np.ndarray:
        return lookup(LABEL_TO_TRAIN, self._label_ids(path))  # 254 -> ignore

    def load_ood(self, path: Path) -> np.ndarray:
        return self._ood_map(self.load_label(self._label_of_mask[path]), self._mask(path))

    def _mask(self, path: Path) -> np.ndarray:
        mask = read_label(path)
        self.check_ids(mask, path, self.valid_mask_values, "object mask (0, 255)")
        return mask

    @staticmethod
    def _ood_map(label: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """1 on the object mask, 255 on the label's ignore pixels elsewhere, 0 on the rest."""
        ood = np.where(label == IGNORE_INDEX, np.uint8(IGNORE_INDEX), np.uint8(0))
        ood[mask == 255] = 1
        return ood

    def __getitem__(self, index: int) -> dict:
        """The base reader's sample, with the label file read once for the label and the OOD map."""
        item = self.items[index]
        image = read_image(item.image)
        label = checked_size(self.load_label(item.label), item.label, image.shape[:2], item.image)
        mask = checked_size(self._mask(item.ood), item.ood, image.shape[:2], item.image)
        return {"id": item.id, "image": image, "label": label, "ood": self._ood_map(label, mask)}
