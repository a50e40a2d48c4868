"""EvaluateJob: every (model, dataset) pair of the zoo, one forward pass each, results stored per pair.

A Hydra multirun over `stages.evaluate.models=[X] stages.evaluate.datasets=[Y]` runs one pair per process;
finished pairs (DONE present) are skipped unless `force`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import hydra

from synthrel.config import to_plain
from synthrel.errors import ConfigError, unknown_name
from synthrel.evaluation.engine import evaluate_dataset
from synthrel.evaluation.results import DONE, is_done, job_dir, metric_rows, weights_fingerprint, write_job
from synthrel.jobs import Manifest, positive_int
from synthrel.runtime import resolve_device
from synthrel.zoo.predictor import PRECISIONS, build_segmenter
from synthrel.zoo.registry import get_entry, zoo_entries

log = logging.getLogger(__name__)


@dataclass
class EvaluateJob:
    zoo: dict
    dataset_configs: dict
    datasets: list[str]
    output_dir: str
    models: list[str] | None = None  # None: every model of the zoo
    dataset_labels: dict = field(default_factory=dict)  # name -> {domain, generator, key}
    batch_size: int = 1
    num_workers: int = 2
    precision: str = "fp32"
    window_batch: int = 16  # sliding-window crops per forward call (mmseg models)
    compile: bool = False  # torch.compile the mmseg models and the metric statistics (minutes; pays on large sets)
    device: str = "auto"
    calib_pixels_per_image: int = 20000
    seed: int = 0
    force: bool = False
    cache_dir: str | None = None
    profile: str = "paper"

    def __post_init__(self):
        self.zoo = to_plain(self.zoo)
        self.dataset_configs = to_plain(self.dataset_configs) or {}
        self.dataset_labels = to_plain(self.dataset_labels) or {}
        self.datasets = list(to_plain(self.datasets) or [])
        entries = zoo_entries(self.zoo)
        self.models = list(to_plain(self.models) or entries)
        for key in self.models:
            get_entry(self.zoo, key)  # ConfigError listing the valid keys
        if not self.datasets:
            raise ConfigError(f"`stages.evaluate.datasets` is empty; choose from {', '.join(self.dataset_configs)}")
        for name in self.datasets:
            if name not in self.dataset_configs:
                raise unknown_name("dataset", name, self.dataset_configs, key="stages.evaluate.datasets")
        positive_int(self.batch_size, "stages.evaluate.batch_size")
        positive_int(self.window_batch, "stages.evaluate.window_batch")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError(f"`stages.evaluate.num_workers` must be an integer >= 0, got {self.num_workers!r}")
        if isinstance(self.calib_pixels_per_image, bool) or not isinstance(self.calib_pixels_per_image, int):
            raise ConfigError("`stages.evaluate.calib_pixels_per_image` must be an integer (0: off, -1: all)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"`stages.evaluate.precision` is {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        self.zoo_name = self.zoo.get("name", "zoo")

    def labels(self, name: str) -> dict:
        """domain, generator and folder key of dataset `name` (default: its own name, real data)."""
        given = self.dataset_labels.get(name) or {}
        return {"domain": given.get("domain", name), "generator": given.get("generator", "real"),
                "key": given.get("key", name)}

    def run(self) -> dict:
        device = resolve_device(self.device)
        results_dir = f"{self.output_dir}/{self.zoo_name}"
        manifest = Manifest(f"{results_dir}/manifest.jsonl", key="job")
        datasets = {}
        done, skipped = 0, 0
        for model_key in self.models:
            entry = get_entry(self.zoo, model_key)
            weights = weights_fingerprint(entry.checkpoint, entry.config)
            todo = [d for d in self.datasets
                    if self.force or not is_done(job_dir(self.output_dir, self.zoo_name, model_key,
                                                         self.labels(d)["key"]), weights)]
            skipped += len(self.datasets) - len(todo)
            self._record_finished(manifest, model_key, [d for d in self.datasets if d not in todo])
            if not todo:
                log.info("%s: all %d dataset(s) done, skipped", model_key, len(self.datasets))
                continue
            segmenter = build_segmenter(entry, device, self.precision, self.cache_dir,
                                        window_batch=self.window_batch, compile=bool(self.compile))
            for name in todo:
                if name not in datasets:
                    datasets[name] = hydra.utils.instantiate(self.dataset_configs[name])
                dataset, labels = datasets[name], self.labels(name)
                start = time.perf_counter()
                out = evaluate_dataset(segmenter, dataset, batch_size=self.batch_size,
                                       num_workers=self.num_workers,
                                       calib_pixels_per_image=self.calib_pixels_per_image, seed=self.seed,
                                       desc=f"{model_key} on {labels['key']}", compile_metrics=bool(self.compile))
                meta = {"model": model_key, "family": entry.family, "dataset": labels["key"],
                        "domain": labels["domain"], "generator": labels["generator"], "profile": self.profile}
                table = metric_rows(out, meta, getattr(dataset, "absent_classes", ()))
                record = {"job": f"{model_key}/{labels['key']}", "seed": self.seed, "n_images": out.n_images,
                          "calib_pixels_per_image": self.calib_pixels_per_image, "precision": self.precision,
                          "device": str(device), "checkpoint": entry.checkpoint, "config": entry.config,
                          "weights": weights,
                          "seconds": round(time.perf_counter() - start, 3)}
                write_job(job_dir(self.output_dir, self.zoo_name, model_key, labels["key"]), out, table, record)
                manifest.append(record)
                done += 1
                miou = table.loc[table.metric == "mIoU", "value"]
                log.info("%s on %s: %d images, mIoU %s", model_key, labels["key"], out.n_images,
                         f"{100 * miou.iloc[0]:.2f}" if len(miou) else "n/a")
        # The pairs this job owns (evaluated now or found done): a sweep's aggregation takes exactly these.
        pairs = [str(job_dir(self.output_dir, self.zoo_name, m, self.labels(d)["key"]))
                 for m in self.models for d in self.datasets]
        return {"results_dir": results_dir, "evaluated": done, "skipped": skipped, "result_dirs": pairs}

    def _record_finished(self, manifest: Manifest, model_key: str, finished: list[str]) -> None:
        """Append the DONE record of finished pairs the manifest lacks (a kill between DONE and the append)."""
        recorded = manifest.done() if finished else set()
        for name in finished:
            folder = job_dir(self.output_dir, self.zoo_name, model_key, self.labels(name)["key"])
            record = json.loads((folder / DONE).read_text())
            if record["job"] not in recorded:
                manifest.append(record)
