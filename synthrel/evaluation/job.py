"""EvaluateJob: every (model, dataset) pair of the zoo, one forward pass each, results stored per pair.

A Hydra multirun over `stages.evaluate.models=[X] stages.evaluate.datasets=[Y]` runs one pair per process;
`shard=i/n` takes pair k when k mod n = i (one process per GPU). A finished pair is skipped unless `force`, and
only while its weights, its data files and every setting that changes its numbers are those recorded in DONE.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from synthrel.config import real_counterparts, to_plain
from synthrel.data.base import check_label_encoding
from synthrel.data.build import build_dataset
from synthrel.errors import ConfigError, DatasetError, unknown_name
from synthrel.evaluation import NOT_EVALUATED
from synthrel.evaluation.engine import evaluate_dataset
from synthrel.evaluation.results import (
    DONE,
    is_done,
    job_dir,
    metric_rows,
    read_done,
    weights_fingerprint,
    write_job,
)
from synthrel.jobs import Manifest, Shard, Verify, exclusive_output, positive_int, write_json_atomic
from synthrel.runstats import SteadyRate
from synthrel.runtime import loader_workers, resolve_device
from synthrel.zoo.predictor import FeatureMode, Precision, build_segmenter
from synthrel.zoo.registry import get_entry, zoo_entries

log = logging.getLogger(__name__)
NO_WEIGHTS_DOC = "docs/install.md#manual-weights"


@dataclass
class EvaluateJob:
    zoo: dict
    dataset_configs: dict
    datasets: list[str]
    output_dir: str
    models: list[str] | None = None  # None: every model of the zoo
    dataset_labels: dict = field(default_factory=dict)  # name -> {domain, generator, key}
    batch_size: int = 1
    num_workers: int | Literal["auto"] = "auto"  # loader workers decoding the images; "auto": runtime.auto_workers()
    precision: Precision = "fp32"
    window_batch: int = 16  # sliding-window crops per forward call (mmseg models)
    compile: bool = False  # torch.compile the mmseg models and the metric statistics (minutes; pays on large sets)
    device: str = "auto"
    calib_pixels_per_image: int = 20000
    # per-image features for cluster temperature scaling (FEATURE_MODES); "auto": "windows" when this run's
    # calibrate stage (`calibrate_methods`) has a cluster method, else none (they cost a pass in slide mode)
    features: FeatureMode | Literal["auto"] | None = "auto"
    calibrate_methods: list[str] | None = None
    seed: int = 0
    label_check: bool = True  # refuse labels that look like trainIds under a labelIds name (check_label_encoding)
    shard: str = "0/1"
    force: bool = False
    verify: Verify = "hash"  # what a re-run checks of the pairs it skips
    cache_dir: str | None = None
    profile: str = "paper"
    skip_absent: bool = False  # leave out datasets whose root folder does not exist (optional OOD benchmarks)

    def __post_init__(self):
        self.zoo = to_plain(self.zoo)
        self.dataset_configs = to_plain(self.dataset_configs) or {}
        self.dataset_labels = to_plain(self.dataset_labels) or {}
        self.datasets = list(to_plain(self.datasets) or [])
        entries = zoo_entries(self.zoo)
        chosen = to_plain(self.models)
        for key in chosen or []:
            get_entry(self.zoo, key)  # ConfigError listing the valid keys
        # Models without weights (the paper zoo's 6 without a public checkpoint) are left out, named or not, so
        # that a sweep over the zoo runs; the reason goes to the log, the summary and the results store (report).
        self.not_evaluated = {
            key: f"no public Cityscapes checkpoint: set `zoo.models.{key}.checkpoint` ({NO_WEIGHTS_DOC})"
            for key in (chosen or entries) if entries[key].needs_weights_file}
        self.models = [key for key in (chosen or entries) if key not in self.not_evaluated]
        if not self.datasets:
            raise ConfigError(f"`stages.evaluate.datasets` is empty; choose from {', '.join(self.dataset_configs)}")
        for name in self.datasets:
            if name not in self.dataset_configs:
                raise unknown_name("dataset", name, self.dataset_configs, key="stages.evaluate.datasets")
        self.absent = []
        if self.skip_absent:
            self.absent = [n for n in self.datasets if "root" in self.dataset_configs[n]
                           and not Path(str(self.dataset_configs[n]["root"])).exists()]
            for name in self.absent:
                log.warning("evaluate: %s left out: not present (%s)", name, self.dataset_configs[name]["root"])
            self.datasets = [n for n in self.datasets if n not in self.absent]
        positive_int(self.batch_size, "stages.evaluate.batch_size")
        positive_int(self.window_batch, "stages.evaluate.window_batch")
        self.num_workers = loader_workers(self.num_workers, "stages.evaluate.num_workers")
        self.zoo_name = self.zoo.get("name", "zoo")
        if self.features == "auto":
            cluster = any(str(m).startswith("cluster") for m in to_plain(self.calibrate_methods) or ())
            self.features = "windows" if cluster else None
        self.shard = Shard.parse(self.shard)

    def labels(self, name: str) -> dict:
        """domain, generator and folder key of dataset `name` (default: real data of the built-in domain whose
        counterpart it is, or of its protocol split `<set>_test` / `<set>_calib`; else its own name)."""
        given = self.dataset_labels.get(name) or {}
        domain_of = {real: domain for domain, real in real_counterparts().items()}
        domain = domain_of.get(name.removesuffix("_test").removesuffix("_calib"), name)
        return {"domain": given.get("domain", domain), "generator": given.get("generator", "real"),
                "key": given.get("key", name)}

    def run(self) -> dict:
        device = resolve_device(self.device)
        started = time.time()  # with force, a pair finished after this by another job of the sweep is kept
        results_dir = f"{self.output_dir}/{self.zoo_name}"
        manifest = Manifest(f"{results_dir}/manifest.jsonl", key="job")
        pairs = [(m, d) for m in self.models for d in self.datasets]
        mine = [pairs[k] for k in self.shard.select(len(pairs))]
        datasets = {name: build_dataset(self.dataset_configs[name])
                    for name in dict.fromkeys(d for _, d in mine)}
        if self.label_check:
            for dataset in datasets.values():
                check_label_encoding(dataset)
        data = {name: dataset.fingerprint() for name, dataset in datasets.items()}  # once, not once per model
        done, skipped = 0, 0
        note = f"batch {self.batch_size}, {self.precision}, compile {bool(self.compile)}"
        models = ", ".join(self.models) if len(self.models) <= 5 else f"{len(self.models)}"
        rates = {"evaluate": SteadyRate("image", note=f"{note}; models {models}",
                                        settings={"precision": self.precision, "compile": bool(self.compile)})}
        for key, why in self.not_evaluated.items():
            log.warning("evaluate: %s left out: %s", key, why)
            write_json_atomic(f"{results_dir}/{NOT_EVALUATED}/{key}.json", {"model": key, "reason": why})
        for key in self.models:  # weights given since an earlier run: the model is no longer left out
            Path(f"{results_dir}/{NOT_EVALUATED}/{key}.json").unlink(missing_ok=True)
        for model_key in dict.fromkeys(m for m, _ in mine):
            entry = get_entry(self.zoo, model_key)
            names = [d for m, d in mine if m == model_key]
            expected = {name: self._settings(entry, data[name]) for name in names}
            todo = [d for d in names if self.force or not is_done(self._folder(model_key, d), expected[d], self.verify)]
            skipped += len(names) - len(todo)
            self._record_finished(manifest, model_key, [d for d in names if d not in todo])
            if not todo:
                log.info("%s: all %d dataset(s) done with these settings, skipped", model_key, len(names))
                continue
            segmenter = build_segmenter(entry, device, self.precision, self.cache_dir,
                                        window_batch=self.window_batch, compile=bool(self.compile))
            for name in todo:
                folder = self._folder(model_key, name)
                # Jobs of one sweep share pairs (e.g. cityscapes_calib in the calibration sweep): wait for the
                # one writing it, then take its result if it is what this job would compute.
                with exclusive_output(folder, wait=True):
                    if is_done(folder, expected[name]) and (not self.force or (folder / DONE).stat().st_mtime
                                                            >= started):
                        log.info("%s on %s: evaluated meanwhile by another run, skipped", model_key, name)
                        skipped += 1
                        continue
                    model_rate = rates.setdefault(f"evaluate: {model_key}", SteadyRate("image", note=note))
                    self._evaluate_pair(segmenter, entry, model_key, name, datasets[name], expected[name],
                                        manifest, device, (rates["evaluate"], model_rate))
                done += 1
        # The pairs this job owns (evaluated now or found done): a sweep's aggregation takes exactly these.
        return {"results_dir": results_dir, "evaluated": done, "skipped": skipped, "absent": self.absent,
                "shard": str(self.shard),
                "pairs": len(mine), "result_dirs": [str(self._folder(m, d)) for m, d in mine],
                "steady_rates": {label: rate.result() for label, rate in rates.items()},
                **({"not_evaluated": self.not_evaluated} if self.not_evaluated else {})}

    def _evaluate_pair(self, segmenter, entry, model_key: str, name: str, dataset, expected: dict,
                       manifest: Manifest, device, rates: tuple[SteadyRate, SteadyRate]) -> None:
        labels = self.labels(name)
        start = time.perf_counter()
        rate = SteadyRate()
        out = evaluate_dataset(segmenter, dataset, batch_size=self.batch_size,
                               num_workers=self.num_workers,
                               calib_pixels_per_image=self.calib_pixels_per_image, seed=self.seed,
                               desc=f"{model_key} on {labels['key']}", features=self.features,
                               compile_metrics=bool(self.compile), rate=rate)
        for total in rates:
            total.add(rate)
        check_evaluable(out, dataset, labels["key"])
        meta = {"model": model_key, "family": entry.family, "dataset": labels["key"],
                "domain": labels["domain"], "generator": labels["generator"], "profile": self.profile}
        table = metric_rows(out, meta, getattr(dataset, "absent_classes", ()))
        record = {"job": f"{model_key}/{labels['key']}", "n_images": out.n_images,
                  "device": str(device), "checkpoint": entry.checkpoint, "config": entry.config,
                  **expected, "features": self.features,
                  "seconds": round(time.perf_counter() - start, 3)}
        write_job(self._folder(model_key, name), out, table, record)
        manifest.append(record)
        miou = table.loc[table.metric == "mIoU", "value"]
        log.info("%s on %s: %d images, mIoU %s", model_key, labels["key"], out.n_images,
                 f"{100 * miou.iloc[0]:.2f}" if len(miou) else "n/a")

    def _folder(self, model_key: str, name: str):
        return job_dir(self.output_dir, self.zoo_name, model_key, self.labels(name)["key"])

    def _settings(self, entry, data_fingerprint: str) -> dict:
        """Everything a pair's numbers depend on, recorded in DONE and compared on a re-run (`is_done`)."""
        settings = {"weights": weights_fingerprint(entry.checkpoint, entry.config), "data": data_fingerprint,
                    "precision": self.precision, "calib_pixels_per_image": self.calib_pixels_per_image,
                    "seed": self.seed}
        if self.features:  # results with features serve runs without; not the reverse
            settings["features"] = self.features
        return settings

    def _record_finished(self, manifest: Manifest, model_key: str, finished: list[str]) -> None:
        """Append the DONE record of finished pairs the manifest lacks (a kill between DONE and the append)."""
        recorded = manifest.done() if finished else set()
        for name in finished:
            record = read_done(self._folder(model_key, name))
            if record["job"] not in recorded:
                manifest.append(record)


def check_evaluable(out, dataset, key: str) -> None:
    """No number from labels without one evaluable pixel (mIoU would be NaN, written beside valid results);
    single images without one are named in the log (they add nothing to the metrics)."""
    if out.confusion is None:
        return
    if out.confusion.sum() == 0:
        raise DatasetError(f"dataset {key!r} under {dataset.root}: no label holds an evaluable pixel (every pixel is "
                           "void, i.e. trainId 255 after mapping); check the label files and their id encoding")
    empty = [i for i, cm in zip(out.image_ids, out.per_image_confusion, strict=True) if cm.sum() == 0]
    if empty:
        log.warning("%s: %d image(s) without an evaluable pixel (all void), e.g. %s", key, len(empty), empty[:3])
