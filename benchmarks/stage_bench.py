"""The evaluate stage as users run it, against mmseg's own loop, in one process (#20 item 2).

`python -m synthrel.run +stage=[evaluate] ...` is timed through its own entry (`synthrel.run.run_stages` on a
config composed from synthrel/conf/ as the CLI composes it): the zoo entry's random weights are read from a checkpoint
file, every image and label is a PNG read from disk in the real layouts (Cityscapes
`leftImg8bit/val/<city>/*_leftImg8bit.png` + `gtFine/val/<city>/*_gtFine_labelIds.png`, and the inpaint stage's
OOD-object set `images/<object>/<id>.png` + labels + masks + manifest, so its OOD rows are computed), and the
results folder (metrics.parquet/csv, confusion, calibration sample, OOD histograms, DONE, manifest) is written.

The job evaluates four datasets with one model build, in this order: `warm_city` and `warm_ood` (one batch each
of same-size images, the second with OOD masks: they pay cuDNN autotuning and, with compile, torch.compile of
the model and of both metric paths, as the first datasets of a real run do), then `cityscapes` and
`ood_objects`, which are timed. mmseg's baseline (`mmseg.apis.inference_model` per image, fp32,
argmax to the host, CPU confusion matrix: `benchmarks.eval_bench.mmseg_loop`) reads the same PNG files through
the same dataset readers. Reported per model and run:
- `stage_img_s`: images of cityscapes + ood_objects over the stage's wall time from the end of the warm-up
  pair's writes to the end of the last pair's writes (data loading, forward passes, metrics, metric rows, the
  results folder and manifest; the model is already built and compiled), and the ratio to mmseg's loop;
- `cold_img_s`: every image (warm-ups included) over the whole `run_stages` call (config instantiation, dataset
  scans, model build from the checkpoint, compile), i.e. a one-dataset run's speed;
- the time split: stage total, model build, `evaluate_dataset` and writes per dataset;
- whether the confusion matrices the stage wrote (confusion.npy) equal mmseg's (fp32 exact run).

Runs: `fp32_exact` (batch 1, one window per forward call, host resize: mmseg's shapes and kernels), `bf16`
(batch 4, 16 windows per call) and `bf16_compile` (the same, `stages.evaluate.compile=true`).

    python -m benchmarks.run stage --models segformer_b5             # one model, all three runs (GPU)
    python -m benchmarks.run stage --models pspnet_r18 --runs fp32_exact bf16_compile
    python -m benchmarks.run stage --tiny                              # tiny architectures on CPU (smoke test)

JSON goes to $OUT/stage_bench.json when OUT is set (or to --json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import write_result
from benchmarks.eval_bench import (
    MODELS,
    TINY_MODELS,
    _peak_gib,
    _peak_reset,
    _sync,
    build_baseline,
    mmseg_loop,
)

ROOT = Path(__file__).resolve().parents[1]
#: run name -> stages.evaluate settings (the rest are the stage's defaults)
RUNS = {
    "fp32_exact": dict(precision="fp32", batch_size=1, window_batch=1, compile=False),
    "bf16": dict(precision="bf16", batch_size=4, window_batch=16, compile=False),
    "bf16_compile": dict(precision="bf16", batch_size=4, window_batch=16, compile=True),
}
CITY = "frankfurt"
OOD_OBJECTS = ("lion", "polar_bear")
#: Files past this many per set are copies of the first ones: a 2048x1024 PNG costs 0.3-0.5 s to write, a copy
#: decodes as slowly as its original, so long sets (the loader's steady state) cost no minutes to build.
DISTINCT_IMAGES = 32


# ------------------------------------------------------------------------------------------------ data on disk
def _smooth_image(rng, height: int, width: int) -> np.ndarray:
    """Natural-image-like RGB content (blurred noise + a vertical ramp), so that PNGs compress and decode as
    photographs do rather than as incompressible noise."""
    import cv2

    noise = cv2.GaussianBlur(rng.integers(0, 136, (height, width, 3), dtype=np.uint8), (7, 7), 2)
    ramp = np.linspace(0, 120, height, dtype=np.float32)
    return (noise + ramp[:, None, None]).astype(np.uint8)


def _label_ids(rng, height: int, width: int, block: int) -> np.ndarray:
    """Blocky Cityscapes labelIds (0..33, void ids included), as a label map compresses."""
    blocks = rng.integers(0, 34, (-(-height // block), -(-width // block)), dtype=np.uint8)
    return np.kron(blocks, np.ones((block, block), np.uint8))[:height, :width]


def write_world(root: Path, n_city: int, n_ood: int, n_warmup: int, size: tuple[int, int], seed: int = 0) -> dict:
    """Cityscapes val (+ a `warm` split) and an OOD-object set (+ a warm-up one, when `n_warmup`) under `root`;
    their roots."""
    from synthrel.data.io import write_png

    h, w = size
    block = max(4, h // 64)
    rng = np.random.default_rng(seed)
    city = root / "cityscapes"
    for split, n in (("val", n_city), ("warm", n_warmup)):
        for i in range(n):
            stem = f"{CITY}_{split}00_{{:06d}}"
            image = city / "leftImg8bit" / split / CITY / f"{stem}_leftImg8bit.png"
            labels = city / "gtFine" / split / CITY / f"{stem}_gtFine_labelIds.png"
            if i >= DISTINCT_IMAGES:
                _copy_of(i, image, labels)
                continue
            write_png(Path(str(image).format(i)), _smooth_image(rng, h, w))
            write_png(Path(str(labels).format(i)), _label_ids(rng, h, w, block))
    roots = {"cityscapes": city}
    for name, n in (("ood_objects", n_ood), ("warm_ood", n_warmup)):
        if n:
            roots[name] = root / name
            _write_ood_set(roots[name], n, rng, h, w, block)
    return roots


def _write_ood_set(ood: Path, n: int, rng, h: int, w: int, block: int) -> None:
    """The inpaint stage's layout: images, labelIds with 254 on the object, 0/255 masks, manifest."""
    from synthrel.data.io import write_png

    records = []
    for i in range(n):
        slug, item = OOD_OBJECTS[i % len(OOD_OBJECTS)], f"{i:05d}"
        records.append({"id": item, "object_slug": slug, "status": "accepted"})
        files = (ood / "images" / slug / "{:05d}.png", ood / "labels" / slug / "{:05d}_labelIds.png",
                 ood / "masks" / slug / "{:05d}_mask.png")
        if i >= DISTINCT_IMAGES:  # an even count: the copy's object is its original's
            _copy_of(i, *files)
            continue
        label = _label_ids(rng, h, w, block)
        mask = np.zeros((h, w), np.uint8)
        side = int(rng.integers(h // 8, h // 4 + 1))
        y, x = int(rng.integers(h // 4, h - side)), int(rng.integers(0, w - side))
        label[y:y + side, x:x + side] = 254  # the OOD id of the inpaint stage's labels
        mask[y:y + side, x:x + side] = 255
        for pattern, array in zip(files, (_smooth_image(rng, h, w), label, mask), strict=True):
            write_png(Path(str(pattern).format(i)), array)
    (ood / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _copy_of(i: int, *patterns: Path) -> None:
    """Item `i` of each `{}`-pattern as a copy of item i % DISTINCT_IMAGES."""
    for pattern in patterns:
        shutil.copyfile(str(pattern).format(i % DISTINCT_IMAGES), str(pattern).format(i))


# ---------------------------------------------------------------------------------------------------- models
def _entry(key: str, tiny: bool) -> dict:
    """Zoo entry `key` of paper40.yaml, or of tiny.yaml with `tiny`, unresolved."""
    from omegaconf import OmegaConf

    zoo = OmegaConf.load(ROOT / f"synthrel/conf/zoo/{'tiny' if tiny else 'paper40'}.yaml")
    return OmegaConf.to_container(zoo.models[key], resolve=False)


def entry_config(key: str, tiny: bool, folder: Path) -> str:
    """The mmseg config of zoo entry `key`: paper40's shipped one, or tiny `key`'s written to `folder` (the tiny
    zoo's own config file is made by the tiny_models stage, which the benchmarks do not run)."""
    if not tiny:
        return _entry(key, tiny)["config"]
    from synthrel.tiny.segmentation import tiny_mmseg_config

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.py"
    tiny_mmseg_config(key).dump(str(path))
    return str(path)


def random_zoo_model(key: str, tiny: bool, config_file: str, checkpoint: Path, device, seed: int = 0):
    """mmseg's model of `config_file` with random weights (`seed`), saved to `checkpoint`; returns it and zoo
    entry `key` (paper40's, or tiny.yaml's) pointing at both files."""
    from synthrel.zoo.mmcv_shim import install
    from synthrel.zoo.registry import load_mmseg_config

    install()
    torch.manual_seed(seed)
    model = build_baseline(load_mmseg_config(config_file), device)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, checkpoint)
    entry = {k: v for k, v in _entry(key, tiny).items() if k != "tiny"}
    return model, {**entry, "config": config_file, "checkpoint": str(checkpoint), "needs_user_checkpoint": False}


def build_model(name: str, tiny: bool, world: Path, device) -> tuple[object, dict]:
    """Benchmark model `name` (or its tiny stand-in) with random weights (seed 0) as a checkpoint file."""
    from benchmarks.eval_bench import model_config

    config_file, _ = model_config(name, tiny)
    return random_zoo_model(TINY_MODELS[name] if tiny else name, tiny, config_file,
                            world / "checkpoints" / f"{name}.pth", device)


# ------------------------------------------------------------------------------------------------- the stage
def compose_stage(world: Path, roots: dict, artifacts: Path, zoo: dict, datasets: list[str], settings: dict,
                  device: str, tiny: bool, shard: str = "0/1"):
    """The config `python -m synthrel.run +stage=[evaluate] shard=<shard> ...` composes, evaluating the
    benchmark's `zoo` ({"name", "models"}) on `datasets` with `settings` as stages.evaluate overrides; the zoo
    and the warm-up datasets named in `datasets` are set on the composed tree (as a local zoo yaml and dataset
    yaml would)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from synthrel.run import CONF_DIR

    overrides = [
        "+stage=[evaluate]", f"device={device}", f"shard={shard}", f"paths.root_dir={world}",
        f"paths.artifacts_dir={artifacts}", f"paths.log_dir={artifacts}/logs", f"paths.output_dir={artifacts}/run",
        f"paths.cache_dir={world}/cache", f"datasets.cityscapes.root={roots['cityscapes']}",
        f"datasets.ood_objects.root={roots['ood_objects']}", f"stages.evaluate.datasets=[{','.join(datasets)}]",
        f"stages.evaluate.models=[{','.join(zoo['models'])}]", "stages.evaluate.features=auto", "force=true",
        *[f"stages.evaluate.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in settings.items()],
    ]
    if tiny:
        overrides.append("profile.calib_pixels_per_image=500")  # 64 x 128 images: fewer pixels than 20k
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.zoo = OmegaConf.create(zoo)
        if "warm_city" in datasets:
            cfg.datasets.warm_city = OmegaConf.create({"_target_": "synthrel.data.cityscapes.CityscapesDataset",
                                                       "root": str(roots["cityscapes"]), "split": "warm",
                                                       "name": "warm_city"})
        if "warm_ood" in datasets:
            cfg.datasets.warm_ood = OmegaConf.create({"_target_": "synthrel.data.synthetic.OODObjectsDataset",
                                                      "root": str(roots["warm_ood"]), "name": "warm_ood"})
    return cfg


class StageClock:
    """Times the job's own calls (model build, evaluate_dataset, metric rows, writes) by wrapping the names
    synthrel.evaluation.job uses, restored on exit; each event is (what, label, start, end)."""

    NAMES = ("build_segmenter", "evaluate_dataset", "metric_rows", "write_job")

    def __init__(self, device):
        self.device, self.events = device, []

    @contextlib.contextmanager
    def installed(self):
        import synthrel.evaluation.job as job

        originals = {n: getattr(job, n) for n in self.NAMES if hasattr(job, n)}
        for name, fn in originals.items():
            setattr(job, name, self._timed(name, fn))
        try:
            yield self
        finally:
            for name, fn in originals.items():
                setattr(job, name, fn)

    def _timed(self, what, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(self.device)
            label = kwargs.get("desc") or (Path(args[0]).name if what == "write_job" else "")
            self.events.append((what, label, start, time.perf_counter()))
            return out
        return timed

    def seconds(self, what: str, dataset: str | None = None) -> float:
        """Seconds in `what` (for `dataset`: calls whose label, a desc or results folder, names it)."""
        return sum(e - s for w, lab, s, e in self.events if w == what and (dataset is None or dataset in lab))

    def end_of(self, what: str, dataset: str) -> float:
        return max(e for w, lab, _, e in self.events if w == what and dataset in lab)


def run_stage(name: str, run_name: str, entry_key: str, entry: dict, world: Path, roots: dict, counts: dict,
              args, device) -> dict:
    import pandas as pd

    from synthrel.run import run_stages

    artifacts = world / f"artifacts_{name}_{run_name}"
    cfg = compose_stage(world, roots, artifacts, {"name": "stage_bench", "models": {entry_key: entry}},
                        ["warm_city", "warm_ood", "cityscapes", "ood_objects"],
                        {**RUNS[run_name], "num_workers": args.num_workers}, args.device, args.tiny)
    clock = StageClock(device)
    _peak_reset(device)
    with clock.installed():
        _sync(device)
        start = time.perf_counter()
        summary = run_stages(cfg)["evaluate"]
        _sync(device)
        end = time.perf_counter()
    timed = counts["cityscapes"] + counts["ood_objects"]
    steady = clock.end_of("write_job", "ood_objects") - clock.end_of("write_job", "warm_ood")
    from synthrel.runtime import auto_workers

    workers = auto_workers() if args.num_workers == "auto" else args.num_workers
    res = {**RUNS[run_name], "num_workers": args.num_workers, "loader_workers": workers,
           "evaluated_pairs": summary["evaluated"],
           "stage_total_s": round(end - start, 2), "model_build_s": round(clock.seconds("build_segmenter"), 2),
           "steady_s": round(steady, 3), "stage_img_s": round(timed / steady, 2),
           "cold_img_s": round((timed + 2 * counts["warmup"]) / (end - start), 2), "peak_gib": _peak_gib(device)}
    split = {ds: {"images": counts["warmup" if ds.startswith("warm") else ds],
                  "evaluate_dataset_s": round(clock.seconds("evaluate_dataset", ds), 3),
                  "write_job_s": round(clock.seconds("write_job", ds), 3)}
             for ds in ("warm_city", "warm_ood", "cityscapes", "ood_objects")}
    res["split"] = split
    evaluate_timed = split["cityscapes"]["evaluate_dataset_s"] + split["ood_objects"]["evaluate_dataset_s"]
    res["evaluate_dataset_share_of_steady"] = round(evaluate_timed / steady, 3)
    res["evaluate_dataset_img_s"] = round(timed / evaluate_timed, 2)
    res["metric_rows_s"] = round(clock.seconds("metric_rows"), 3)  # all four datasets
    results = Path(summary["results_dir"]) / entry_key
    folders = {ds: next(results.glob(f"{ds}*")) for ds in ("cityscapes", "ood_objects")}  # ood_objects_<gen>_<set>
    res["confusion"] = {ds: np.load(folder / "confusion.npy") for ds, folder in folders.items()}
    metrics = {ds: set(pd.read_csv(folder / "metrics.csv").metric) for ds, folder in folders.items()}
    res["ood_metric_rows"] = sorted(metrics["ood_objects"] - metrics["cityscapes"])
    res["results_files"] = sorted(p.name for p in folders["ood_objects"].iterdir())
    if not args.keep:
        shutil.rmtree(artifacts, ignore_errors=True)
    return res


class _OnDisk(torch.utils.data.Dataset):
    """A dataset reader as eval_bench.mmseg_loop takes it (no cached subset of distinct images)."""

    cache = None

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i]


def bench_model(name: str, world: Path, roots: dict, counts: dict, args, device) -> dict:
    from synthrel.data.cityscapes import CityscapesDataset
    from synthrel.data.synthetic import OODObjectsDataset
    from synthrel.metrics.segmentation import mean_iou

    baseline, entry = build_model(name, args.tiny, world, device)
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "test_cfg": str(dict(baseline.test_cfg)), "images": counts, "image_size": list(args.size), "runs": {}}
    readers = {"cityscapes": CityscapesDataset(roots["cityscapes"], split="val"),
               "ood_objects": OODObjectsDataset(roots["ood_objects"])}
    seconds, reference = 0.0, {}
    for ds, reader in readers.items():
        img_s, reference[ds], _ = mmseg_loop(baseline, _OnDisk(reader))
        seconds += len(reader) / img_s
    mm_img_s = (counts["cityscapes"] + counts["ood_objects"]) / seconds
    res["mmseg_loop"] = {"img_s": round(mm_img_s, 2)}
    print(f"{name}: mmseg inference_model loop {mm_img_s:.2f} img/s (PNG reads included)", flush=True)
    del baseline
    if device.type == "cuda":
        torch.cuda.empty_cache()
    entry_key = TINY_MODELS[name] if args.tiny else name
    for run_name in args.runs:
        run = run_stage(name, run_name, entry_key, entry, world, roots, counts, args, device)
        confusion = run.pop("confusion")
        run["confusion_equal_to_mmseg"] = {ds: bool(np.array_equal(confusion[ds], reference[ds])) for ds in confusion}
        run["confusion_abs_diff_sum"] = {ds: int(np.abs(confusion[ds] - reference[ds]).sum()) for ds in confusion}
        run["miou_diff_points"] = {ds: round(100 * (mean_iou(confusion[ds]) - mean_iou(reference[ds])), 4)
                                   for ds in confusion}
        run["ratio_vs_mmseg_loop"] = round(run["stage_img_s"] / mm_img_s, 2)
        run["cold_ratio_vs_mmseg_loop"] = round(run["cold_img_s"] / mm_img_s, 2)
        print(f"{name} {run_name}: " + ", ".join(f"{k}={v}" for k, v in run.items() if k != "split"), flush=True)
        res["runs"][run_name] = run
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return res


def table(res: dict) -> str:
    lines = [f"{'model':14} {'run':14} {'stage img/s':>11} {'x mmseg':>8} {'cold img/s':>10} {'cold x':>7} "
             f"{'eval share':>10} {'build s':>8} {'total s':>8} {'cm = mmseg':>10}"]
    for name, r in res.items():
        if not isinstance(r, dict) or "runs" not in r:
            continue
        lines.append(f"{name:14} {'mmseg loop':14} {r['mmseg_loop']['img_s']:>11}")
        for run_name, run in r["runs"].items():
            equal = "yes" if all(run["confusion_equal_to_mmseg"].values()) else "no"
            lines.append(f"{'':14} {run_name:14} {run['stage_img_s']:>11} {run['ratio_vs_mmseg_loop']:>8} "
                         f"{run['cold_img_s']:>10} {run['cold_ratio_vs_mmseg_loop']:>7} "
                         f"{run['evaluate_dataset_share_of_steady']:>10} {run['model_build_s']:>8} "
                         f"{run['stage_total_s']:>8} {equal:>10}")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run stage", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    p.add_argument("--n-images", type=int, default=None, help="Cityscapes val images (default 64; tiny 4)")
    p.add_argument("--n-ood", type=int, default=None, help="OOD-object images (default 16; tiny 2)")
    p.add_argument("--n-warmup", type=int, default=None, help="warm-up images (default 4: one batch; tiny 2)")
    p.add_argument("--num-workers", type=lambda v: v if v == "auto" else int(v), default="auto",
                   help="stages.evaluate.num_workers (default: auto, the stage's default)")
    p.add_argument("--tiny", action="store_true", help="tiny architectures on CPU, 64x128 images")
    p.add_argument("--device", default=None, help="default: cuda if available (cpu with --tiny)")
    p.add_argument("--world", default=None, help="folder for the data, checkpoints and results (default: a "
                   "temporary folder, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep each run's results folder")
    p.add_argument("--json", default=None, help="write the JSON here (default $OUT/stage_bench.json)")
    args = p.parse_args(argv)
    args.n_images = args.n_images or (4 if args.tiny else 64)
    args.n_ood = args.n_ood or (2 if args.tiny else 16)
    args.n_warmup = args.n_warmup or (2 if args.tiny else 4)
    args.size = (64, 128) if args.tiny else (1024, 2048)
    if args.tiny:
        args.num_workers = 1 if args.num_workers == "auto" else min(args.num_workers, 1)
    args.device = args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    return args


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    device = torch.device(args.device)
    world = Path(args.world) if args.world else Path(tempfile.mkdtemp(prefix="stage_bench_"))
    world.mkdir(parents=True, exist_ok=True)
    res = {"command": " ".join(["python -m benchmarks.run stage", *argv])}
    try:
        start = time.perf_counter()
        roots = write_world(world, args.n_images, args.n_ood, args.n_warmup, args.size)
        res["write_world_s"] = round(time.perf_counter() - start, 1)
        counts = {"warmup": args.n_warmup, "cityscapes": args.n_images, "ood_objects": args.n_ood}
        for name in args.models:
            res[name] = bench_model(name, world, roots, counts, args, device)
            write_result(res, "stage_bench.json", args.json)
        print(table(res), flush=True)
    finally:
        if not args.world:
            shutil.rmtree(world, ignore_errors=True)
    write_result(res, "stage_bench.json", args.json)
    return res


if __name__ == "__main__":
    main()
