"""`DemoDataJob`: the demo scenes written in the real datasets' file layouts (Cityscapes, ACDC, IDD, Road Anomaly)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthrel.conventions import IDD_LEVEL3_TO_TRAIN, OOD_LABEL_ID, TRAIN_TO_LABEL, label_ids_to_train_ids
from synthrel.data import weather
from synthrel.data.demo.canvas import CARAVAN, FOCAL_PER_WIDTH, STATIC, TERRAIN, to_uint8
from synthrel.data.demo.scene import INDIA_STYLE, render_scene
from synthrel.data.demo.weather import apply_condition
from synthrel.data.io import write_jpg, write_png, write_png16
from synthrel.errors import ConfigError
from synthrel.jobs import item_rng, positive_int, read_json_artifact, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

TRAIN_CITIES = ("aachen", "bochum")
VAL_CITIES = ("frankfurt", "lindau", "munster")  # relis protocol: test = frankfurt, calibration = the others
# IDD train scenes: two of relis' 37 test scenes and one outside them, so that the idd_test split selects.
IDD_TRAIN_SCENES = ("265", "431", "1")
IDD_VAL_SCENES = ("100", "101")
STEREO_BASELINE = 0.209313  # metres, Cityscapes' stereo baseline (the demo camera is a pinhole with this rig)


def stereo_files(depth: np.ndarray, width: int, height: int) -> tuple[np.ndarray, dict]:
    """Cityscapes disparity PNG values and camera JSON for a metric depth map (inf = sky: no disparity, 0).

    p = round(256 d + 1) with d = baseline * fx / depth pixels, as Cityscapes encodes it (d = (p - 1) / 256).
    """
    fx = FOCAL_PER_WIDTH * width
    with np.errstate(divide="ignore"):
        disparity = STEREO_BASELINE * fx / depth.astype(np.float64)
    raw = np.where(np.isfinite(depth) & (depth > 0), np.round(disparity * 256.0 + 1.0), 0)
    camera = {"extrinsic": {"baseline": STEREO_BASELINE, "pitch": 0.0, "roll": 0.0, "x": 0.0, "y": 0.0, "yaw": 0.0,
                            "z": 0.0},
              "intrinsic": {"fx": fx, "fy": fx, "u0": width / 2, "v0": height / 2}}  # u0/v0: nominal, unused
    return np.clip(raw, 0, 65535).astype(np.uint16), camera


# IDD level3Ids for the Cityscapes labelIds the renderer uses: the inverse of IDD_LEVEL3_TO_TRAIN, plus the
# IDD classes that have no Cityscapes trainId (terrain -> non-drivable fallback, caravan -> autorickshaw,
# static -> billboard); void labelIds stay 255.
LABEL_TO_IDD_LEVEL3 = np.full(256, 255, np.uint8)
for _level3, _train in enumerate(IDD_LEVEL3_TO_TRAIN[:27]):
    if _train != 255:
        LABEL_TO_IDD_LEVEL3[TRAIN_TO_LABEL[_train]] = _level3
LABEL_TO_IDD_LEVEL3[[TERRAIN, CARAVAN, STATIC]] = [3, 8, 17]


@dataclass
class DemoDataJob:
    """Write the demo datasets under `root` (the tiny profile's data_dir):

    cityscapes/ (clean train and val), ACDC/ (fog, night, rain, snow; train and val, `n_shift` images each),
    IDD_Segmentation/ (train and val, `n_shift` images each), RoadAnomaly/ (`n_ood` frames).
    The folders carry the relis protocol splits (synthrel/conf/dataset/protocol_splits.yaml): Cityscapes val cities
    frankfurt / munster / lindau, ACDC train and val scenes, IDD train scenes in and out of the 37 test ones.
    """

    root: str
    seed: int = 0
    image_size: list[int] = field(default_factory=lambda: [256, 128])
    #: per dataset (cityscapes, acdc, idd, road_anomaly): [W, H] instead of image_size (the smoke profile's
    #: real resolutions: ACDC 1920x1080 beside Cityscapes 2048x1024)
    sizes: dict[str, list[int]] | None = field(default_factory=dict)
    #: processes rendering images (each image has its own seeded generator: the files do not depend on it)
    workers: int = 1
    n_train: int = 24
    n_val: int = 12
    n_shift: int = 8
    n_ood: int = 8
    force: bool = False

    MARKER = ".synthrel_demo_data.json"
    SUBDIRS = ("cityscapes", "ACDC", "IDD_Segmentation", "RoadAnomaly")
    FAMILIES = ("cityscapes", "acdc", "idd", "road_anomaly")

    def __post_init__(self):
        for key in ("n_train", "n_val", "n_shift", "n_ood", "workers"):
            positive_int(getattr(self, key), f"stages.demo_data.{key}")
        if len(self.image_size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 32
                                            for v in self.image_size):
            raise ConfigError(f"`stages.demo_data.image_size` must be [W, H] with integers >= 32, "
                              f"got {self.image_size!r}")
        from synthrel.config import to_plain

        self.sizes = {k: list(v) for k, v in (to_plain(self.sizes) or {}).items()}
        for key, size in self.sizes.items():
            if key not in self.FAMILIES:
                raise ConfigError(f"`stages.demo_data.sizes.{key}`: unknown dataset; valid: {', '.join(self.FAMILIES)}")
            if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 32 for v in size):
                raise ConfigError(f"`stages.demo_data.sizes.{key}` must be [W, H] with integers >= 32, got {size!r}")
        self.root = Path(self.root)

    @property
    def params(self) -> dict:
        params = {"seed": self.seed, "image_size": list(self.image_size), "n_train": self.n_train,
                  "n_val": self.n_val, "n_shift": self.n_shift, "n_ood": self.n_ood}
        return {**params, "sizes": self.sizes} if self.sizes else params

    def run(self) -> dict:
        marker = self.root / self.MARKER
        previous = read_json_artifact(marker, "the demo data's completion record", "Remove it, or re-run with "
                                      "force=true") if marker.exists() else None
        if previous and previous.get("status") == "complete" and previous["params"] == self.params and not self.force:
            log.info("demo data already complete under %s (seed %s); skipping", self.root, self.seed)
            return {"data_dir": str(self.root), "skipped": True}
        self._clear(previous)
        write_json_atomic(marker, {"status": "writing", "params": self.params})
        counts = self._write_all()
        write_json_atomic(marker, {"status": "complete", "params": self.params, "counts": counts})
        return {"data_dir": str(self.root), "skipped": False, **counts}

    def _clear(self, previous: dict | None) -> None:
        """Remove an earlier demo set; refuse to touch folders that demo_data did not write (real data)."""
        existing = [self.root / d for d in self.SUBDIRS if (self.root / d).exists()]
        if existing and previous is None:
            raise ConfigError(
                f"{existing[0]} exists but was not written by demo_data (no {self.MARKER} in {self.root}); "
                f"refusing to overwrite what may be a real dataset. Point `stages.demo_data.root` "
                f"(paths.data_dir, e.g. with profile=tiny) at another folder"
            )
        for path in existing:
            shutil.rmtree(path)

    def _write_all(self) -> dict:
        counts = {}
        jobs = [("cityscapes", split, n) for split, n in (("train", self.n_train), ("val", self.n_val))]
        jobs += [(f"acdc_{cond}", split, self.n_shift) for cond in weather.CONDITIONS for split in ("train", "val")]
        jobs += [("idd", split, self.n_shift) for split in ("train", "val")]
        jobs += [("road_anomaly", "test", self.n_ood)]
        items = []
        for dataset, split, n in jobs:
            width, height = self.sizes.get(dataset.split("_")[0] if dataset.startswith("acdc_") else dataset,
                                           self.image_size)
            items += [(dataset, split, index, width, height) for index in range(n)]
            counts[f"{dataset}_{split}"] = n
        with tqdm(total=len(items), desc=f"demo data (seed {self.seed})", unit="img") as bar:
            if self.workers == 1:
                for item in items:
                    self._write_one(*item)
                    bar.update()
            else:
                from concurrent.futures import ProcessPoolExecutor

                with ProcessPoolExecutor(min(self.workers, len(items))) as pool:
                    for _ in pool.map(self._write_item, items):
                        bar.update()
        write_text_atomic(self.root / "RoadAnomaly" / "frame_list.json",
                          json.dumps([f"{self._frame_name(i)}.jpg" for i in range(self.n_ood)], indent=1) + "\n")
        return counts

    def _write_item(self, item: tuple) -> None:
        self._write_one(*item)

    @staticmethod
    def _frame_name(index: int) -> str:
        return f"demo_anomaly_{index:03d}"

    def _write_one(self, dataset: str, split: str, index: int, width: int, height: int) -> None:
        rng = item_rng(self.seed, index, f"{dataset}/{split}")
        if dataset == "cityscapes":
            cities = TRAIN_CITIES if split == "train" else VAL_CITIES
            city = cities[index % len(cities)]
            scene = render_scene(rng, width, height)
            base = f"{city}_{index // len(cities):06d}_{19 + index:06d}"
            write_png(self.root / "cityscapes" / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png",
                      scene.to_uint8())
            gt = self.root / "cityscapes" / "gtFine" / split / city
            write_png(gt / f"{base}_gtFine_labelIds.png", scene.label_ids)
            write_png(gt / f"{base}_gtFine_labelTrainIds.png", label_ids_to_train_ids(scene.label_ids))
            # stereo depth for the physics-based fog baseline (no random draw: the other files are unchanged)
            raw, camera = stereo_files(scene.depth, width, height)
            write_png16(self.root / "cityscapes" / "disparity" / split / city / f"{base}_disparity.png", raw)
            write_json_atomic(self.root / "cityscapes" / "camera" / split / city / f"{base}_camera.json", camera)
        elif dataset.startswith("acdc_"):
            condition = dataset[len("acdc_"):]
            scene = render_scene(rng, width, height)
            first = (0 if split == "train" else 500) + 10 * weather.CONDITIONS.index(condition)
            sequence = f"GOPR{first + index // 4:04d}"
            base = f"{sequence}_frame_{index:06d}"
            write_png(self.root / "ACDC" / "rgb_anon" / condition / split / sequence / f"{base}_rgb_anon.png",
                      to_uint8(apply_condition(scene, condition, rng)))
            gt = self.root / "ACDC" / "gt" / condition / split / sequence
            write_png(gt / f"{base}_gt_labelIds.png", scene.label_ids)
            write_png(gt / f"{base}_gt_labelTrainIds.png", label_ids_to_train_ids(scene.label_ids))
        elif dataset == "idd":
            scene = render_scene(rng, width, height, style=INDIA_STYLE)
            scenes = IDD_TRAIN_SCENES if split == "train" else IDD_VAL_SCENES
            folder = scenes[index % len(scenes)]
            base = f"{index:06d}"
            write_png(self.root / "IDD_Segmentation" / "leftImg8bit" / split / folder / f"{base}_leftImg8bit.png",
                      scene.to_uint8())
            write_png(self.root / "IDD_Segmentation" / "gtFine" / split / folder / f"{base}_gtFine_labellevel3Ids.png",
                      LABEL_TO_IDD_LEVEL3[scene.label_ids])
        else:
            scene = render_scene(rng, width, height, anomalies=int(rng.integers(1, 3)))
            frames = self.root / "RoadAnomaly" / "frames"
            name = self._frame_name(index)
            write_jpg(frames / f"{name}.jpg", scene.to_uint8())
            write_png(frames / f"{name}.labels" / "labels_semantic.png",
                      np.where(scene.label_ids == OOD_LABEL_ID, 2, 0).astype(np.uint8))
