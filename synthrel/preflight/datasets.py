"""Dataset checks: a dataset config the run reads is instantiated with its own reader class (synthrel.data), so
the layout rules have one home; here are only the sizes the paper's protocol expects and where to get each set.

Counts are checked on the paper profile (the tiny profile's demo data is small by design): per city where the
protocol splits by city (Cityscapes val: test = frankfurt, calibration = lindau + munster), else per split.
"""

from __future__ import annotations

import importlib
from collections import Counter

from synthrel.errors import SynthrelError

#: (reader class, split or track/condition) -> expected images, per scene where the protocol needs it
EXPECTED: dict[tuple[str, str], dict[str, int] | int] = {
    ("CityscapesDataset", "val"): {"frankfurt": 267, "lindau": 59, "munster": 174},
    ("CityscapesDataset", "train"): 2975,
    ("ACDCDataset", "fog/train"): 400, ("ACDCDataset", "night/train"): 400,
    ("ACDCDataset", "rain/train"): 400, ("ACDCDataset", "snow/train"): 400,
    ("ACDCDataset", "fog/val"): 100, ("ACDCDataset", "night/val"): 106,
    ("ACDCDataset", "rain/val"): 100, ("ACDCDataset", "snow/val"): 100,
    ("IDDDataset", "train"): 6993, ("IDDDataset", "val"): 981,
    ("RoadAnomalyDataset", ""): 60,
    ("SMIYCDataset", "anomaly"): 10, ("SMIYCDataset", "obstacle"): 30,
    ("FishyscapesLAFDataset", ""): 100,
}

#: reader class -> (module constant holding its layout, where to get it and how to arrange it)
SOURCES: dict[str, tuple[str, str]] = {
    "CityscapesDataset": ("LAYOUT", (
        "https://www.cityscapes-dataset.com/downloads/ (free account): leftImg8bit_trainvaltest.zip and "
        "gtFine_trainvaltest.zip; unzip both into <root> (the archives hold leftImg8bit/ and gtFine/). Or: "
        "`pip install cityscapesscripts && csDownload leftImg8bit_trainvaltest.zip gtFine_trainvaltest.zip`.")),
    "ACDCDataset": ("LAYOUT", (
        "https://acdc.vision.ee.ethz.ch/download (free account): rgb_anon_trainvaltest.zip and "
        "gt_trainval.zip; unzip both into <root> (the archives' own nesting is accepted).")),
    "IDDDataset": ("LAYOUT", (
        "https://idd.insaan.iiit.ac.in/dataset/download/ (free account): 'IDD - Segmentation (IDD 20k Part I)'; "
        "unzip into <root>. IDD ships polygons only: generate the level3Ids PNGs with the IDD toolkit: "
        "`git clone https://github.com/AutoNUE/public-code && cd public-code && pip install -r requirements.txt && "
        "python preperation/createLabels.py --datadir <root> --id-type level3Ids --num-workers 4`.")),
    "RoadAnomalyDataset": ("ROAD_ANOMALY_LAYOUT", (
        "https://www.epfl.ch/labs/cvlab/data/road-anomaly/ : RoadAnomaly_jpg.zip; unzip into <root>.")),
    "SMIYCDataset": ("SMIYC_LAYOUT", (
        "https://segmentmeifyoucan.com/datasets : dataset_AnomalyTrack.zip / dataset_ObstacleTrack.zip; unzip "
        "into the parent of <root>.")),
    "FishyscapesLAFDataset": ("FS_LAF_LAYOUT", (
        "https://fishyscapes.com/dataset : the Lost & Found validation labels, with the Lost & Found frames they "
        "label (RbA's laf_images); images/ and labels/ under <root>.")),
    "SyntheticDataset": ("SYNTHETIC_LAYOUT", (
        "written by the generate stage: run the covariate experiment of this domain first "
        "(e.g. `python -m synthrel.run +experiment=covariate_fog`).")),
    "OODObjectsDataset": ("OOD_LAYOUT", (
        "written by the inpaint stage: run `python -m synthrel.run +experiment=ood_objects` first.")),
}


def reader_class(target: str) -> type:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def layout_and_source(target: str, with_layout: bool = True) -> str:
    """Where to get the data, and the layout its reader expects (from the reader's module)."""
    name = target.rpartition(".")[2]
    if name not in SOURCES:
        return ""
    constant, source = SOURCES[name]
    layout = getattr(importlib.import_module(target.rpartition(".")[0]), constant, "")
    return f"get it: {source}" + (f"\nlayout under <root>:\n{layout}" if with_layout else "")


def _expectation(name: str, spec: dict):
    split = spec.get("split", "")
    if name == "ACDCDataset":
        split = f"{spec.get('condition')}/{split or 'train'}"
    elif name == "SMIYCDataset":
        split = spec.get("track", "anomaly")
    return EXPECTED.get((name, split))


def expected_images(spec: dict) -> int | None:
    """The published number of images of the dataset config `spec` (its scene subset's, if it names one), None
    when EXPECTED does not know it: the GPU-time estimate's count for data not on disk yet."""
    expected = _expectation(spec["_target_"].rpartition(".")[2], spec)
    subset = spec.get("cities") or spec.get("scenes")
    if isinstance(expected, dict):
        return sum(n for scene, n in expected.items() if not subset or scene in subset)
    return expected if not subset else None


def scene_of(item) -> str:
    return str(item.meta.get("city") or item.meta.get("scene") or "")


def check_dataset(spec: dict, check_counts: bool) -> tuple[str, str, int]:
    """(status, detail, number of images) of the dataset config `spec` (a `_target_` reader config)."""
    target = spec["_target_"]
    try:
        dataset = reader_class(target)(**{k: v for k, v in spec.items() if not k.startswith("_")})
    except SynthrelError as e:
        return "missing", str(e), 0
    counts = Counter(scene_of(it) for it in dataset.items)
    n = len(dataset)
    expected = _expectation(target.rpartition(".")[2], spec) if check_counts else None
    subset = spec.get("cities") or spec.get("scenes")
    problems = []
    if subset and check_counts and spec.get("require_all_scenes", True):
        problems += [f"scene {s!r}: no images" for s in subset if not counts.get(str(s))]
    if isinstance(expected, dict):
        for scene, want in expected.items():
            if (not subset or scene in subset) and counts.get(scene, 0) != want:
                problems.append(f"{scene}: {counts.get(scene, 0)} images, expected {want}")
    elif isinstance(expected, int) and not subset and n != expected:
        problems.append(f"{n} images, expected {expected}")
    if problems:
        return "incomplete", "; ".join(problems), n
    return "present", f"{n} images" + (f" in {len(counts)} scenes" if len(counts) > 1 else ""), n
