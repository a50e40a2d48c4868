"""The corrupt stage: classic-corruption test sets (Hendrycks & Dietterich, ICLR 2019) as a baseline.

The paper's supplementary (Tab. 4) compares its synthetic sets with "Hendrycks' augmentations" of Cityscapes.
To make the two comparable, a corrupted set uses the generate stage's geometry (a random square crop of side
min(H, W), image resized with the area filter, label nearest-resized to `resolution`) and its layout
(`synthrel.data.synthetic.write_item`, read back by `SyntheticDataset`). Sample j of every
(corruption, severity) set is the same crop of the same source image, drawn from (seed, j) alone; the
corruption's noise is seeded from (seed, j, corruption), the same for every severity, so that two severities
of a sample differ by the severity only. Results do not depend on the shard, the
order of the sets or the number of samples asked for, and a re-run resumes from each set's manifest.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from synthrel.corruptions.apply import MIN_SIDE, check_corruption, check_severity, corrupt, library_version
from synthrel.errors import ConfigError, DatasetError
from synthrel.jobs import (
    Shard,
    Verify,
    exclusive_outputs,
    item_rng,
    item_seed,
    path_identity,
    plan_resume,
    positive_int,
    writing,
)

log = logging.getLogger(__name__)

DEFAULT_CORRUPTIONS = ["fog", "snow", "brightness", "contrast", "gaussian_noise", "motion_blur"]


def set_name(corruption: str, severity: int) -> str:
    """Folder of one corrupted set: 'fog_s3'."""
    return f"{corruption}_s{severity}"


@dataclass(frozen=True)
class CorruptionItem:
    """One corrupted image to write; every random draw is made here, before any pixel is read."""

    id: str
    set_name: str
    corruption: str
    severity: int
    index: int  # j: the sample's number, shared by all sets
    source_index: int
    source_id: str
    city: str
    crop_box: tuple[int, int, int, int]
    seed: int  # the corruption's noise seed (shared by the severities)


@dataclass
class CorruptJob:
    """Write `num_samples` corrupted crops of `source` per (corruption, severity) under `output_dir`."""

    source: dict  # dataset config: ${datasets.cityscapes}
    output_dir: str
    corruptions: list[str] = field(default_factory=lambda: list(DEFAULT_CORRUPTIONS))
    severities: list[int] = field(default_factory=lambda: [3])
    num_samples: int = 500
    resolution: int = 512
    write_original: bool = False
    seed: int = 0
    shard: str = "0/1"
    force: bool = False
    verify: Verify = "hash"  # what a re-run checks of the items it skips
    _shard: Shard = field(init=False, repr=False)

    def __post_init__(self):
        self._shard = Shard.parse(self.shard)
        positive_int(self.num_samples, "stages.corrupt.num_samples")
        positive_int(self.resolution, "stages.corrupt.resolution")
        if self.resolution < MIN_SIDE:
            raise ConfigError(f"`stages.corrupt.resolution` must be >= {MIN_SIDE} (the corruptions' minimum image "
                              f"side), got {self.resolution}")
        for key, values, check in (("corruptions", self.corruptions, check_corruption),
                                   ("severities", self.severities, check_severity)):
            if not isinstance(values, list | tuple) or not values:
                raise ConfigError(f"`stages.corrupt.{key}` must be a non-empty list, got {values!r}")
            for value in values:
                check(value, f"stages.corrupt.{key}")
            if len(set(values)) != len(values):
                raise ConfigError(f"`stages.corrupt.{key}` lists a value twice: {values!r}")

    @property
    def sets(self) -> dict[str, Path]:
        return {set_name(c, s): Path(self.output_dir) / set_name(c, s)
                for c in self.corruptions for s in self.severities}

    def plan(self, dataset) -> list[CorruptionItem]:
        """All items of all sets (before sharding), sample-major so that consecutive items share a crop."""
        items = []
        for j in range(self.num_samples):
            source_index, source, box = sample_crop(dataset, self.seed, j)
            for corruption in self.corruptions:
                for severity in self.severities:
                    name = set_name(corruption, severity)
                    items.append(CorruptionItem(
                        id=f"{name}_{j:05d}_{source.id}", set_name=name, corruption=corruption,
                        severity=severity, index=j, source_index=source_index, source_id=source.id,
                        city=source.meta.get("city", "corrupted"), crop_box=box,
                        seed=item_seed(self.seed, j, f"corrupt/{corruption}"),
                    ))
        return items

    def run(self) -> dict:
        from synthrel.data.build import build_dataset

        dataset = build_dataset(self.source)
        if not hasattr(dataset, "load_label_ids"):
            raise DatasetError(
                f"source dataset {type(dataset).__name__} (config key `stages.corrupt.source`) cannot give raw "
                "Cityscapes labelIds maps; the corrupted sets need a Cityscapes-layout source"
            )
        sets = self.sets
        everything = self.plan(dataset)
        mine = [everything[k] for k in self._shard.select(len(everything))]
        with exclusive_outputs(sets.values(), self._shard):
            return self._write(dataset, everything, mine, sets)

    def settings(self) -> dict:
        """What every corrupted item depends on besides its own inputs (recorded per item, compared on a re-run)."""
        return {"library": library_version(), "resolution": self.resolution, "write_original": self.write_original,
                "seed": self.seed}

    @staticmethod
    def item_inputs(it: CorruptionItem, dataset) -> dict:
        source = dataset.items[it.source_index]
        return {"corruption": it.corruption, "severity": it.severity, "source_image": path_identity(source.image),
                "label_map": path_identity(source.label), "crop_box": list(it.crop_box), "noise_seed": it.seed}

    def _write(self, dataset, everything: list, mine: list, sets: dict) -> dict:
        from synthrel.data.io import read_image
        from synthrel.data.synthetic import remove_items, verified_records, write_item
        from synthrel.generation.conditioning import crop_resize_image, crop_resize_label

        common = self.settings()
        plans, settings = {}, {}
        for name, folder in sets.items():  # every set is checked before anything is written or removed
            inputs = {it.id: self.item_inputs(it, dataset) for it in mine if it.set_name == name}
            plans[name] = plan_resume("corrupt", f"set {folder}",
                                      verified_records(folder, inputs, self.verify, "corrupt"), common, inputs,
                                      force=self.force, elsewhere="`stages.corrupt.output_dir`",
                                      planned={it.id for it in everything if it.set_name == name})
            settings.update({id: {**common, **own} for id, own in inputs.items()})
        for name, plan in plans.items():
            remove_items(sets[name], plan.obsolete)
        todo_ids = {(name, id) for name, plan in plans.items() for id in plan.todo}
        todo = [it for it in mine if (it.set_name, it.id) in todo_ids]
        summary = {"output_dir": str(self.output_dir), "sets": {k: str(v) for k, v in sets.items()},
                   "shard": str(self._shard), "written": 0, "skipped": len(mine) - len(todo)}
        meta = {"library": library_version(), "resolution": self.resolution, "job_seed": self.seed}
        crop_key, crop = None, None
        with contextlib.ExitStack() as marks, tqdm(total=len(mine), initial=summary["skipped"],
                                                   desc=f"corrupt {dataset.name}") as bar:
            for folder in sets.values():  # readers refuse these sets until this run has finished them
                marks.enter_context(writing(folder, self._shard))
            for it in todo:
                if crop_key != (it.source_index, it.crop_box):
                    crop_key = (it.source_index, it.crop_box)
                    image = read_image(dataset.items[it.source_index].image)
                    crop = (crop_resize_image(image, it.crop_box, self.resolution),
                            crop_resize_label(dataset.load_label_ids(it.source_index), it.crop_box,
                                              self.resolution))
                clean, label_ids = crop
                write_item(sets[it.set_name], it.id, it.city, corrupt(clean, it.corruption, it.severity, it.seed),
                           label_ids, original=clean if self.write_original else None,
                           meta={**meta, "source_id": it.source_id, "source_index": it.source_index,
                                 "crop_box": list(it.crop_box), "corruption": it.corruption,
                                 "severity": it.severity, "index": it.index, "seed": it.seed,
                                 "settings": settings[it.id]})
                summary["written"] += 1
                bar.update(1)
        log.info("corrupt %s: wrote %d, skipped %d existing items of shard %s under %s", dataset.name,
                 summary["written"], summary["skipped"], self._shard, self.output_dir)
        return summary


def sample_crop(dataset, seed: int, j: int):
    """Sample j's (source index, source item, square crop box), drawn from (seed, j) alone: every corruption set
    and the physics-fog sets take the same crop of the same image for j."""
    from synthrel.generation.conditioning import square_crop_box

    source_index = int(item_rng(seed, j, "corrupt/source").integers(len(dataset)))
    source = dataset.items[source_index]
    size = dataset.check_pair_size(source_index)  # a label of another size would give wrong crops
    return source_index, source, square_crop_box(*size, item_rng(seed, j, "corrupt/crop"))
