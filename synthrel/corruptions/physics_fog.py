"""Physics-based fog (Table 1 / Table 4 baseline), as Foggy Cityscapes (Sakaridis et al., IJCV 2018).

Koschmieder's law: I(x) = R(x) t(x) + L (1 - t(x)), with transmission t(x) = exp(-beta * l(x)), R the clear
image in [0, 1], L the atmospheric light and l(x) the distance of the scene point, here the metric depth from
Cityscapes' stereo: disparity/<split>/<city>/<name>_disparity.png (16-bit, d = (p - 1) / 256 pixels for p > 0;
p = 0 is invalid) and camera/<split>/<city>/<name>_camera.json (depth = extrinsic.baseline * intrinsic.fx / d).
Pixels without a valid disparity (p <= 1: the sky, occlusions) are taken as infinitely far (t = 0: pure
atmospheric light), which is what the sky gets in Foggy Cityscapes; unlike Foggy Cityscapes, depth holes are not
in-painted and t is not refined with a guided filter. `beta` is the attenuation coefficient in 1/m (Foggy
Cityscapes: 0.005, 0.01, 0.02, i.e. visibility 600, 300, 150 m). L is a number in [0, 1] (grey) or
"dark_channel": He et al.'s estimate (the brightest input pixel among the 0.1% of pixels with the brightest
15x15 dark channel), as Foggy Cityscapes does.

The `fog` stage (`PhysicsFogJob`) fogs whole frames, then takes the corrupt stage's crops (same seeds: sample j
is the same crop of the same source image as in every corruption set) and writes one set per beta in the
synthetic layout (`synthrel.data.synthetic.write_item`), read back by `SyntheticDataset`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from synthrel.errors import ConfigError, DatasetError
from synthrel.jobs import Shard, Verify, exclusive_outputs, positive_int, writing

log = logging.getLogger(__name__)

FOGGY_CITYSCAPES_BETAS = (0.005, 0.01, 0.02)


def set_name(beta: float) -> str:
    """Folder and generator suffix of one fog density: 'beta0.01'."""
    return f"beta{beta:g}"


def disparity_to_depth(raw: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes 16-bit disparity PNG values -> metric depth (float64, inf where there is no valid disparity)."""
    raw = np.asarray(raw)
    disparity = (raw.astype(np.float64) - 1.0) / 256.0
    valid = (raw > 0) & (disparity > 0)
    depth = np.full(raw.shape, np.inf)
    depth[valid] = baseline * fx / disparity[valid]
    return depth


def dark_channel_airlight(image: np.ndarray, patch: int = 15, fraction: float = 0.001) -> np.ndarray:
    """He et al. (CVPR 2009): RGB in [0, 1] of the brightest pixel among the top `fraction` of the dark channel."""
    from scipy.ndimage import minimum_filter

    rgb = np.asarray(image, dtype=np.float64)
    dark = minimum_filter(rgb.min(axis=2), size=patch, mode="nearest")
    n = max(1, int(math.ceil(dark.size * fraction)))
    top = np.argsort(dark.ravel(), kind="stable")[-n:]
    flat = rgb.reshape(-1, 3)
    return flat[top[np.argmax(flat[top].sum(axis=1))]]


def koschmieder_fog(image: np.ndarray, depth: np.ndarray, beta: float,
                    airlight: float | str | np.ndarray = "dark_channel") -> np.ndarray:
    """Fog an RGB uint8 (H, W, 3) image with metric `depth` (H, W; inf = infinitely far); returns uint8."""
    if not (isinstance(beta, int | float) and not isinstance(beta, bool) and beta >= 0):
        raise ConfigError(f"physics fog: beta (attenuation coefficient, 1/m) must be a number >= 0, got {beta!r}")
    image = np.asarray(image)
    depth = np.asarray(depth, dtype=np.float64)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or depth.shape != image.shape[:2]:
        raise ValueError(f"physics fog expects RGB uint8 (H, W, 3) and depth (H, W), got {image.dtype} "
                         f"{image.shape} and {depth.shape}")
    clear = image.astype(np.float64) / 255.0
    if isinstance(airlight, str):
        if airlight != "dark_channel":
            raise ConfigError(f"physics fog: airlight must be a number in [0, 1] or 'dark_channel', got {airlight!r}")
        light = dark_channel_airlight(clear)
    else:
        light = np.broadcast_to(np.asarray(airlight, dtype=np.float64), (3,))
    with np.errstate(invalid="ignore"):
        transmission = np.exp(-beta * depth) if beta > 0 else np.ones_like(depth)
    transmission = np.nan_to_num(transmission, nan=0.0)[..., None]  # 0 * inf (beta 0, sky) is handled above
    foggy = clear * transmission + light * (1.0 - transmission)
    return np.clip(np.round(foggy * 255.0), 0, 255).astype(np.uint8)


def stereo_paths(image: Path, root: Path) -> tuple[Path, Path]:
    """The disparity PNG and camera JSON of a Cityscapes image (leftImg8bit/<split>/<city>/<name>_leftImg8bit.png)."""
    relative = image.relative_to(root / "leftImg8bit")
    name = relative.name[: -len("_leftImg8bit.png")]
    folder = relative.parent
    return root / "disparity" / folder / f"{name}_disparity.png", root / "camera" / folder / f"{name}_camera.json"


def load_depth(image: Path, root: Path) -> np.ndarray:
    """Metric depth of a Cityscapes frame from its disparity map and camera calibration; errors name the file."""
    from PIL import Image

    disparity_path, camera_path = stereo_paths(Path(image), Path(root))
    for path in (disparity_path, camera_path):
        if not path.is_file():
            raise DatasetError(f"physics fog needs Cityscapes' disparity and camera files: {path} is missing "
                               f"(download disparity_trainvaltest.zip and camera_trainvaltest.zip into {root})")
    try:
        camera = json.loads(camera_path.read_text())
        baseline, fx = float(camera["extrinsic"]["baseline"]), float(camera["intrinsic"]["fx"])
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{camera_path}: expected Cityscapes camera JSON with extrinsic.baseline and "
                           f"intrinsic.fx ({type(error).__name__}: {error})") from None
    with Image.open(disparity_path) as im:
        raw = np.asarray(im)
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32, np.uint8):
        raise DatasetError(f"{disparity_path}: expected a 16-bit single-channel disparity PNG, got {raw.dtype} "
                           f"{raw.shape}")
    return disparity_to_depth(raw, baseline, fx)


@dataclass
class PhysicsFogJob:
    """Write `num_samples` fogged crops of `source` per beta under `output_dir`/beta<beta>/."""

    source: dict  # dataset config: ${datasets.cityscapes}
    output_dir: str
    betas: list[float] = field(default_factory=lambda: list(FOGGY_CITYSCAPES_BETAS))
    airlight: float | Literal["dark_channel"] = "dark_channel"
    num_samples: int = 500
    resolution: int = 512
    seed: int = 0
    shard: str = "0/1"
    force: bool = False
    verify: Verify = "hash"  # what a re-run checks of the items it skips
    _shard: Shard = field(init=False, repr=False)

    def __post_init__(self):
        self._shard = Shard.parse(self.shard)
        positive_int(self.num_samples, "stages.physics_fog.num_samples")
        positive_int(self.resolution, "stages.physics_fog.resolution")
        if not isinstance(self.betas, list | tuple) or not self.betas:
            raise ConfigError(f"`stages.physics_fog.betas` must be a non-empty list of numbers >= 0, got {self.betas!r}")
        for beta in self.betas:
            if beta < 0:
                raise ConfigError(f"`stages.physics_fog.betas`: {beta!r} is not an attenuation coefficient (a number >= 0)")
        if len({set_name(b) for b in self.betas}) != len(self.betas):
            raise ConfigError(f"`stages.physics_fog.betas` lists a value twice: {self.betas!r}")
        if not isinstance(self.airlight, str) and not 0 <= float(self.airlight) <= 1:
            raise ConfigError(f"`stages.physics_fog.airlight` must be a number in [0, 1] or dark_channel, got {self.airlight!r}")

    @property
    def sets(self) -> dict[str, Path]:
        return {set_name(b): Path(self.output_dir) / set_name(b) for b in self.betas}

    def plan(self, dataset) -> list[dict]:
        """Sample j: the corrupt stage's source image and crop for j (same seeds), once per beta."""
        from synthrel.corruptions.job import sample_crop

        items = []
        for j in range(self.num_samples):
            source_index, source, box = sample_crop(dataset, self.seed, j)
            for beta in self.betas:
                name = set_name(beta)
                items.append({"id": f"physics_fog_{name}_{j:05d}_{source.id}", "set": name, "beta": float(beta),
                              "index": j, "source_index": source_index, "source_id": source.id,
                              "city": source.meta.get("city", "fog"), "crop_box": box})
        return items

    def run(self) -> dict:
        import hydra.utils

        dataset = hydra.utils.instantiate(self.source, _convert_="all")
        if not hasattr(dataset, "load_label_ids"):
            raise DatasetError(f"source dataset {type(dataset).__name__} (config key `stages.physics_fog.source`) is not "
                               "a Cityscapes-layout dataset (labelIds, disparity and camera files)")
        sets = self.sets
        everything = self.plan(dataset)
        mine = [everything[k] for k in self._shard.select(len(everything))]
        with exclusive_outputs(sets.values(), self._shard):
            return self._write(dataset, mine, sets)

    def _write(self, dataset, mine: list[dict], sets: dict) -> dict:
        from synthrel.data.io import read_image
        from synthrel.data.synthetic import verified_records, write_item
        from synthrel.generation.conditioning import crop_resize_image, crop_resize_label

        done = {name: set() if self.force else set(verified_records(
            folder, [it["id"] for it in mine if it["set"] == name], self.verify, "physics_fog"))
            for name, folder in sets.items()}
        todo = [it for it in mine if it["id"] not in done[it["set"]]]
        summary = {"output_dir": str(self.output_dir), "sets": {k: str(v) for k, v in sets.items()},
                   "shard": str(self._shard), "written": 0, "skipped": len(mine) - len(todo)}
        cache_key, cache = None, None
        with contextlib.ExitStack() as marks, tqdm(total=len(mine), initial=summary["skipped"],
                                                   desc=f"physics fog {dataset.name}") as bar:
            for folder in sets.values():  # readers refuse these sets until this run has finished them
                marks.enter_context(writing(folder, self._shard))
            for it in todo:
                if cache_key != it["source_index"]:
                    cache_key = it["source_index"]
                    source = dataset.items[it["source_index"]]
                    cache = (read_image(source.image), load_depth(source.image, dataset.root),
                             dataset.load_label_ids(it["source_index"]))
                image, depth, label_ids = cache
                foggy = koschmieder_fog(image, depth, it["beta"], self.airlight)
                box = tuple(it["crop_box"])
                write_item(sets[it["set"]], it["id"], it["city"], crop_resize_image(foggy, box, self.resolution),
                           crop_resize_label(label_ids, box, self.resolution),
                           meta={"baseline": "physics_fog", "beta": it["beta"], "airlight": self.airlight,
                                 "source_id": it["source_id"], "source_index": it["source_index"],
                                 "crop_box": list(box), "index": it["index"], "resolution": self.resolution,
                                 "job_seed": self.seed})
                summary["written"] += 1
                bar.update(1)
        log.info("physics fog %s: wrote %d, skipped %d existing items of shard %s under %s", dataset.name,
                 summary["written"], summary["skipped"], self._shard, self.output_dir)
        return summary
