"""The ood_detection stage: OOD metrics of the zoo (from the evaluate stage) and of RbA, in a tidy table.

Both conventions, exact (synthrel.metrics.ood): pooled metrics in the RbA convention (auroc_/ap_/fpr95_<score>,
`convention` rba_pooled) and the mean over images of GenVal's per-image metrics
(img_auroc_/img_fpr95_/img_aupr_in_/img_aupr_out_<score>, genval_per_image), with the counts of images left
out of those means (n_images_without_ood, n_images_only_ood).
Zoo (spec S10): the OOD rows of `<results_root>/<model>/<dataset key>/metrics.parquet`, which the evaluate
stage computes for msp, max_logit and entropy.
RbA (spec S11): each Mask2Former of `rba.models` (hub id or folder), and optionally its outlier-exposure
fine-tuned copy (`rba.finetune`), is run on the OOD datasets with the same metrics of its score
-sum_c tanh(l_c). Finished (model, dataset) pairs are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from synthrel.calibration.job import write_table_atomic
from synthrel.errors import ConfigError, DatasetError, unknown_name
from synthrel.evaluation.results import REPAIR, is_done
from synthrel.jobs import (
    ArtifactError,
    Manifest,
    atomic_path,
    exclusive_output,
    positive_int,
    read_json_artifact,
    read_parquet_artifact,
    write_json_atomic,
)
from synthrel.metrics.ood import OODAccumulator, dataset_rows, describe_row
from synthrel.ood_detection.outliers import RBA_MIN_SIZES, SyntheticMode
from synthrel.runstats import SteadyRate, steady_rate_callback
from synthrel.runtime import loader_workers

log = logging.getLogger(__name__)

TABLE = "ood_detection"
COLUMNS = ["model", "family", "dataset", "domain", "generator", "metric", "cls", "value", "n_images", "profile",
           "convention", "score"]
#: Fine-tuning iterations by schedule: the paper's supplementary A.4 (the default) and RbA's own config
#: (ckpts/swin_b_1dl_rba_ood_coco/config.yaml MAX_ITER). `max_steps` set explicitly overrides either.
Schedule = Literal["supplementary", "rba_official"]
RBA_SCHEDULES = dict(zip(get_args(Schedule), (5000, 2000), strict=True))


@dataclass
class Variant:
    """A fine-tuned row of Table 2: its outliers (synthetic items or COCO objects) and which synthetic items."""

    outliers: Literal["synthetic", "coco"]
    items: Literal["all", "curated"] = "all"


@dataclass
class FinetuneSettings:
    """`stages.ood_detection.rba.finetune`: RbA's outlier-exposure recipe (synthrel/conf/stage/ood_detection.yaml
    says what each is); null crop_size / min_sizes / max_size: RbA's values."""

    enabled: bool = False
    bases: list[str] = field(default_factory=lambda: ["rba_swin_b", "rba_swin_l"])
    variants: dict[str, Variant] | None = field(default_factory=lambda: {
        "coco": Variant("coco"), "synthetic_curated": Variant("synthetic", "curated"),
        "synthetic_all": Variant("synthetic", "all")})
    synthetic_mode: SyntheticMode = "whole_image"
    curated_list: str | None = None
    inlier_dataset: str = "cityscapes"
    inlier_split: str = "train"
    outlier_dataset: str = "ood_objects"
    coco_root: str | None = None
    mix_prob: float = 0.1
    schedule: Schedule = "supplementary"
    max_steps: int | None = None  # null: the schedule's
    batch_size: int = 16
    crop_size: list[int] | None = field(default_factory=lambda: [512, 1024])
    min_sizes: list[int] | None = field(default_factory=lambda: list(RBA_MIN_SIZES))
    max_size: int | None = 4096
    flip: bool = True
    color_aug: bool = True
    lr: float = 1e-4
    weight_decay: float = 0.05
    poly_power: float = 0.9
    warmup_iters: int = 0
    grad_clip: float | None = 0.01
    # auto: 16-mixed on a GPU, as RbA trains (its config's SOLVER.AMP.ENABLED: true), 32-true on the CPU
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed"] = "auto"
    # loader workers; auto: the CPU cores but one, at most 8 (synthrel.runtime.auto_workers). Each builds a
    # 1024x2048 sample in 70-130 ms of CPU (`python -m benchmarks.run rbaloader`), and a step takes 16: 2 workers
    # cap an H100's Swin-B fine-tune (docs/benchmarks.md#rba-amp) at about 1 step/s
    num_workers: int | Literal["auto"] = "auto"


def finetune_settings(given) -> dict:
    """The RbA fine-tune as the stage runs it: FinetuneSettings under the given keys (null crop_size, min_sizes,
    max_size: RbA's recipe values) and max_steps from the schedule unless given. One home, so that the
    preflight's GPU-time count is the stage's own."""
    given = dataclasses.asdict(given) if isinstance(given, FinetuneSettings) else dict(given or {})
    for key in ("crop_size", "min_sizes", "max_size"):
        if given.get(key) is None:
            given.pop(key, None)
    settings = dataclasses.asdict(FinetuneSettings(**given))
    if settings["max_steps"] is None:
        settings["max_steps"] = RBA_SCHEDULES[settings["schedule"]]
    return settings


def finetune_precision(precision: str, device) -> str:
    """The fine-tune's Lightning precision: `auto` is RbA's AMP (16-mixed) on CUDA and 32-true elsewhere (fp16
    autocast is a GPU feature)."""
    if precision != "auto":
        return precision
    return "16-mixed" if str(device).split(":")[0] == "cuda" else "32-true"


@dataclass
class RbaSettings:
    """`stages.ood_detection.rba`: base models (name -> hub id | folder | {checkpoint, arch}), the OOD sets they
    are scored on (null: the stage's `datasets`) and the fine-tune."""

    models: dict[str, str | dict] | None = field(default_factory=dict)
    datasets: list[str] | None = None
    # workers decoding the scored images (PNG decode of a 1024x2048 frame: ~0.1 s, longer than the H100's
    # Swin-B pass); auto: synthrel.runtime.auto_workers()
    num_workers: int | Literal["auto"] = "auto"
    # the scoring network's precision: fp32 (RbA's own evaluation) | bf16 (autocast, the named fast path on GPUs;
    # the scores themselves are computed in float32 either way: docs/benchmarks.md#rba-bf16)
    precision: Literal["fp32", "bf16"] = "fp32"
    finetune: FinetuneSettings | None = field(default_factory=FinetuneSettings)


class NotRun(Exception):
    """A Table 2 cell that cannot be computed with what the user gave (the message is the cell's text)."""


def rba_arch(model: str) -> str:
    """The backbone named in an RbA model's key (rba_swin_b+ours -> Swin-B): the measured budget rows' naming."""
    for key, arch in (("swin_b", "Swin-B"), ("swin_l", "Swin-L")):
        if key in model.lower():
            return arch
    return model


def _exact_metrics_in(folder: Path) -> bool:
    """RbA metrics.json of this version (older ones held histogram metrics, without `rows`: evaluated again)."""
    path = folder / "metrics.json"
    if not path.is_file():
        return False
    try:
        return "rows" in read_json_artifact(path, "RbA metrics", "It is evaluated again")
    except ArtifactError as error:
        log.warning("evaluating again: %s", error)
        return False


@dataclass
class OODDetectionJob:
    results_root: str
    output_dir: str
    datasets: list[str] = field(default_factory=lambda: ["road_anomaly"])
    dataset_configs: dict = field(default_factory=dict)
    dataset_keys: dict = field(default_factory=dict)  # dataset name -> results folder name (default: the name)
    models: list[str] | None = None
    zoo_scores: bool = True
    rba: RbaSettings = field(default_factory=RbaSettings)
    seed: int = 0
    profile: str = "paper"
    force: bool = False
    device: str = "auto"
    report_dir: str | None = None  # the analysis folder the report stage gathers (tables + ood_outputs.json)

    def __post_init__(self):
        from synthrel.config import to_plain as plain

        self.dataset_configs = plain(self.dataset_configs) or {}
        self.dataset_keys = plain(self.dataset_keys) or {}
        self.datasets = list(plain(self.datasets) or [])
        if not self.datasets:
            raise ConfigError("stages.ood_detection.datasets is empty; e.g. [road_anomaly, ood_objects]")
        if not isinstance(self.rba, RbaSettings):  # from the config (its keys checked by synthrel.schemas)
            self.rba = RbaSettings(**(plain(self.rba) or {}))
        self.rba_models = dict(self.rba.models or {})
        self.rba_datasets = list(self.rba.datasets or self.datasets)
        self.rba_workers = loader_workers(self.rba.num_workers, "stages.ood_detection.rba.num_workers")
        self.finetune = ft = finetune_settings(self.rba.finetune)
        ft["num_workers"] = loader_workers(ft["num_workers"], "stages.ood_detection.rba.finetune.num_workers")
        if ft["enabled"]:
            for base in ft["bases"]:
                if base not in self.rba_models:
                    raise unknown_name("RbA base model", base, self.rba_models,
                                       "stages.ood_detection.rba.finetune.bases")
            positive_int(ft["max_steps"], "stages.ood_detection.rba.finetune.max_steps")
            positive_int(ft["batch_size"], "stages.ood_detection.rba.finetune.batch_size")
        if self.rba_models:
            for name in self.rba_datasets:
                if name not in self.dataset_configs:
                    raise unknown_name("dataset", name, self.dataset_configs, "stages.ood_detection.rba.datasets")

    def key(self, dataset: str) -> str:
        return self.dataset_keys.get(dataset, dataset)

    def run(self) -> dict:
        # jobs of a sweep share the folder: one at a time, so the last one's table holds every job's results
        with exclusive_output(self.output_dir, wait=True):
            return self._run()

    def _run(self) -> dict:
        out = Path(self.output_dir)
        self._rates: dict[str, SteadyRate] = {}  # this run's fine-tuning steps/s and scoring images/s
        rows = self.zoo_rows() if self.zoo_scores else []
        if self.rba_models:
            rows += self.rba_rows(out)
        table = pd.DataFrame(rows, columns=COLUMNS)
        write_table_atomic(table, out, TABLE)
        log.info("ood_detection: %d row(s) for %d model(s) written to %s", len(table), table["model"].nunique(), out)
        if self.report_dir and (len(table) or self.rba_models):
            self.write_report_tables(table, out, Path(self.report_dir))
        return {"output_dir": str(out), "n_rows": len(table), "models": sorted(table["model"].unique().tolist()),
                "steady_rates": {label: rate.result() for label, rate in self._rates.items()}}

    def write_report_tables(self, table: pd.DataFrame, out: Path, report_dir: Path) -> None:
        """One layout per convention (rows model and score, columns dataset and metric, in %) and their index
        `ood_outputs.json`, which the report stage gathers."""
        from synthrel.reporting import NOT_MEASURED_FOOTNOTE, save_table

        titles = {"rba_pooled": "Table 2 layout: OOD detection pooled over each dataset (RbA convention: AUROC, "
                                "AP, FPR95 at TPR > 0.95, void left out), %",
                  "genval_per_image": "OOD detection per image, mean over the images with OOD and ID pixels "
                                      "(GenVal convention: FPR95 at TPR >= 0.95, every pixel counts), %"}
        index = []
        scored = table[table["score"].notna()]
        for convention, title in titles.items():
            part = scored[scored["convention"] == convention]
            if part.empty:
                continue
            part = part.assign(metric=[m.removeprefix("img_").removesuffix(f"_{s}")
                                       for m, s in zip(part["metric"], part["score"], strict=True)],
                               value=100 * part["value"])
            layout = part.pivot_table(index=["model", "score"], columns=["dataset", "metric"], values="value",
                                      aggfunc="last", dropna=False)
            layout.columns = [f"{d} {m}" for d, m in layout.columns]
            index.append({"kind": "table", "title": title, **save_table(
                layout, report_dir, f"ood_{convention}", na_footnote=NOT_MEASURED_FOOTNOTE, drop_empty_rows=True,
                notes=self.same_weights() if self.rba_models else ())})
        if self.rba_models:
            from synthrel.ood_detection.table2 import table2

            layout = table2(table, self.rba_model_info, self.rba_datasets, self.not_run, self.dataset_keys)
            title = ("Table 2: RbA with outlier exposure, pooled over each OOD set (RbA convention: AUROC, AP, "
                     "FPR95 at TPR > 0.95), %, beside the paper's numbers (spec 5.2, Road Anomaly)")
            write_table_atomic(layout.reset_index(names="model").astype(str), out, "table2")
            index.insert(0, {"kind": "table", "title": title, **save_table(
                layout, report_dir, "table2", digits=1, na_footnote=NOT_MEASURED_FOOTNOTE, notes=self.same_weights())})
        index.append({"kind": "data", "title": "OOD detection, every row (tidy)", "csv": str(out / f"{TABLE}.csv")})
        write_json_atomic(report_dir / "ood_outputs.json", index)

    def same_weights(self) -> list[str]:
        """Why RbA rows can be identical: base models that load one checkpoint (the tiny profile's one RbA)."""
        by_checkpoint: dict[str, list[str]] = {}
        for name, spec in self.rba_models.items():
            checkpoint = spec.get("checkpoint") if isinstance(spec, dict) else spec
            by_checkpoint.setdefault(str(checkpoint), []).append(name)
        return [f"{' and '.join(names)} load the same checkpoint ({checkpoint}), so their rows (and their fine-tunes') "
                "are the same model's." for checkpoint, names in by_checkpoint.items() if len(names) > 1]

    # -------------------------------------------------------------------------------------------- zoo
    def zoo_rows(self) -> list[dict]:
        root = Path(self.results_root)
        if not root.is_dir():
            raise DatasetError(f"results root {root} does not exist (stages.ood_detection.results_root); "
                               "run the evaluate stage on the OOD datasets first")
        models = self.models or sorted(p.name for p in root.iterdir() if p.is_dir())
        rows = []
        for model in models:
            for dataset in self.datasets:
                folder = root / model / self.key(dataset)
                table = read_parquet_artifact(folder / "metrics.parquet", "a metrics table", REPAIR) \
                    if is_done(folder) else None
                if table is not None:
                    table = table[table["metric"].map(describe_row).notna()]
                if table is None or table.empty:
                    missing = f"{folder / 'metrics.parquet'} (finished, with OOD rows)"
                    if self.models:
                        raise DatasetError(f"{missing} is missing: evaluate {model} on {dataset}")
                    log.warning("ood_detection: no %s, skipped", missing)
                    continue
                for row in table.to_dict("records"):
                    convention, score = describe_row(row["metric"])
                    rows.append({**row, "profile": self.profile, "convention": convention, "score": score})
        return rows

    # -------------------------------------------------------------------------------------------- RbA
    def absent(self, dataset: str) -> str | None:
        """'not run: <set> not present' when the dataset's root folder does not exist (else None)."""
        root = (self.dataset_configs.get(dataset) or {}).get("root")
        if root is not None and not Path(str(root)).exists():
            return f"not run: {dataset} not present"
        return None

    def rba_rows(self, out: Path) -> list[dict]:
        import hydra

        from synthrel.runtime import resolve_device

        device = resolve_device(self.device)
        models = {name: (None, None, path) for name, path in self.rba_models.items()}  # name -> (base, variant, spec)
        self.not_run: dict[tuple[str, str | None], str] = {}  # (model, dataset or None) -> cell text
        if self.finetune["enabled"]:
            for base in self.finetune["bases"]:
                for variant in self.finetune["variants"]:
                    name = f"{base}+{variant}"
                    try:
                        models[name] = (base, variant, self.run_finetune(out, base, variant, device))
                    except NotRun as reason:
                        log.warning("ood_detection: %s %s", name, reason)
                        self.not_run[(name, None)] = str(reason)
                        models[name] = (base, variant, None)
        self.rba_model_info = {name: (base, variant) for name, (base, variant, _) in models.items()}
        manifest = Manifest(out / "rba" / "manifest.jsonl", key="item")
        # item -> the precision it was scored at (entries before the option: fp32, the only one there was)
        scored = {r["item"]: r.get("precision", "fp32") for r in manifest.read()}
        rows = []
        for model, (_, _, spec) in models.items():
            if spec is None:
                continue
            loaded = None
            for dataset in self.rba_datasets:
                reason = self.absent(dataset)
                if reason:
                    self.not_run[(model, dataset)] = reason
                    continue
                folder = out / "rba" / model / self.key(dataset)
                item = f"{model}|{self.key(dataset)}"
                if scored.get(item) not in (None, self.rba.precision):
                    log.info("ood_detection: RbA %s was scored at %s, rba.precision is %s: scoring it again",
                             item, scored[item], self.rba.precision)
                if scored.get(item) != self.rba.precision or self.force or not _exact_metrics_in(folder):
                    if loaded is None:
                        from synthrel.ood_detection.rba import load_mask2former

                        loaded = load_mask2former(spec).to(device)
                    ds = hydra.utils.instantiate(self.dataset_configs[dataset])
                    label = f"ood_detection: RbA {rba_arch(model)} scoring"
                    rate = self._rates.setdefault(label, SteadyRate(
                        "image", note=f"batch 1, one image per call, at each set's resolution, {self.rba.precision}",
                        settings={"rba.precision": self.rba.precision}))
                    self._rba_evaluate(loaded, ds, folder, desc=f"RbA {model} on {dataset}", rate=rate)
                    manifest.append({"item": item, "model_path": json.dumps(spec, default=str), "seed": self.seed,
                                     "precision": self.rba.precision})
                rows += self._rba_pair_rows(model, dataset, folder)
        return rows

    def _rba_evaluate(self, model, dataset, folder: Path, desc: str, rate: SteadyRate | None = None) -> None:
        import torch
        from torch.utils.data import DataLoader

        from synthrel.ood_detection.rba import rba_predict
        from synthrel.zoo.predictor import PRECISIONS  # precision name -> autocast dtype (fp32: None)

        if not dataset.has_ood:
            raise DatasetError(f"dataset {dataset.name!r} has no OOD masks; RbA needs an OOD dataset")
        device = next(model.parameters()).device
        acc = OODAccumulator(["rba"], device)
        ids = []
        rate = rate or SteadyRate()
        cuda = device.type == "cuda"
        # Workers decode the next images while the GPU scores; pinned, their copies do not wait for the GPU.
        loader = DataLoader(dataset, batch_size=None, num_workers=self.rba_workers, pin_memory=cuda,
                            prefetch_factor=4 if self.rba_workers else None)
        with rate.loop():
            for sample in tqdm(loader, total=len(dataset), desc=desc):
                with torch.inference_mode():
                    scores = rba_predict(model, sample["image"][None], device, PRECISIONS[self.rba.precision])[0]
                acc.update(scores[None], sample["ood"][None].to(device, non_blocking=cuda))
                ids.append(sample["id"])
                rate.tick(1)
        result = acc.result()
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "ood_per_image.npz") as tmp:
            np.savez(tmp, per_image=result["per_image"], image_pixels=result["image_pixels"],
                     scores=np.asarray(result["scores"]), metrics=np.asarray(result["metrics"]),
                     image_ids=np.asarray(ids, dtype=str))
        write_json_atomic(folder / "metrics.json", {"rows": [list(r) for r in dataset_rows(result)]})

    def _rba_pair_rows(self, model: str, dataset: str, folder: Path) -> list[dict]:
        result = read_json_artifact(folder / "metrics.json", "RbA metrics", "Run the ood_detection stage again: "
                                    "it evaluates damaged pairs again", keys=("rows",))
        meta = {"model": model, "family": "RbA", "dataset": self.key(dataset), "domain": None,
                "generator": None, "profile": self.profile}
        rows = []
        for metric, value, n_images in result["rows"]:
            convention, score = describe_row(metric)
            rows.append({**meta, "metric": metric, "cls": "", "value": value, "n_images": n_images,
                         "convention": convention, "score": score})
        return rows

    # --------------------------------------------------------------------------------------- finetune
    def outlier_sets(self, variant: dict):
        """(synthetic set or None, CocoObjects or None) of a variant; NotRun when the user did not give them."""
        import hydra

        from synthrel.ood_detection.outliers import CocoObjects, ItemSubset, read_item_list

        ft = self.finetune
        if variant["outliers"] == "coco":
            if not ft["coco_root"]:
                raise NotRun("not run: COCO not given")
            return None, CocoObjects(ft["coco_root"])
        reason = self.absent(ft["outlier_dataset"])
        if reason:
            raise NotRun(reason)
        synthetic = hydra.utils.instantiate(self.dataset_configs[ft["outlier_dataset"]])
        if variant.get("items", "all") == "curated":
            path = ft["curated_list"]
            if not path or not Path(path).is_file():
                raise NotRun(f"not run: curated list {path} not found (stages.ood_detection.rba.finetune."
                             "curated_list; python -m synthrel.ood_detection.curated writes one to edit)")
            synthetic = ItemSubset(synthetic, read_item_list(path), str(path))
        return synthetic, None

    def run_finetune(self, out: Path, base: str, variant_name: str, device) -> str:
        """Fine-tune RbA `base` with the outliers of `variant_name`; returns the saved folder (kept when it was
        saved with the same settings). Written to a temporary folder, renamed when complete."""
        ft = {**self.finetune, "precision": finetune_precision(self.finetune["precision"], device)}
        variant = {"items": "all", **ft["variants"][variant_name]}
        name = f"{base}+{variant_name}"
        folder = out / "rba_finetuned" / f"{name}-s{self.seed}"
        # the record holds what shapes the model; loader workers do not (a sample depends on its index only)
        settings = json.loads(json.dumps({**{k: v for k, v in ft.items() if k not in ("variants", "bases",
                                                                                   "num_workers")},
                                          "variant": variant, "base": self.rba_models[base], "seed": self.seed},
                                         default=str))
        if not variant["outliers"] == "coco":
            settings.pop("coco_root")
        if variant.get("items") != "curated":
            settings.pop("curated_list")
        record = folder / "finetune.json"
        if (folder / "config.json").is_file() and record.is_file() and not self.force:
            kept = read_json_artifact(record, "a fine-tuning record", "Fine-tune again with force=true")
            if isinstance(kept, dict) and {k: v for k, v in kept.items() if k != "num_workers"} == settings:
                return str(folder)
            log.info("ood_detection: %s was fine-tuned with other settings; fine-tuning again", folder)
        synthetic, coco = self.outlier_sets(variant)
        import hydra
        import pytorch_lightning as pl
        from pytorch_lightning.loggers import CSVLogger
        from torch.utils.data import DataLoader

        from synthrel.jobs import atomic_dir
        from synthrel.ood_detection.outliers import OutlierMixDataset, collate_outliers
        from synthrel.ood_detection.rba import RbAFineTuner

        pl.seed_everything(self.seed, workers=True)
        inliers = hydra.utils.instantiate(self.dataset_configs[ft["inlier_dataset"]], split=ft["inlier_split"])
        data = OutlierMixDataset(inliers, synthetic, coco, mix_prob=ft["mix_prob"], seed=self.seed,
                                 num_samples=ft["max_steps"] * ft["batch_size"], crop_size=ft["crop_size"],
                                 flip=ft["flip"], min_sizes=ft["min_sizes"], max_size=ft["max_size"],
                                 color_aug=ft["color_aug"], synthetic_mode=ft["synthetic_mode"])
        log.info("ood_detection: fine-tuning %s with %d loader worker(s) (stages.ood_detection.rba.finetune."
                 "num_workers)", name, ft["num_workers"])
        loader = DataLoader(data, batch_size=ft["batch_size"], num_workers=ft["num_workers"],
                            collate_fn=collate_outliers)
        module = RbAFineTuner(self.rba_models[base], lr=ft["lr"], weight_decay=ft["weight_decay"],
                              max_steps=ft["max_steps"], poly_power=ft["poly_power"], warmup_iters=ft["warmup_iters"])
        trainer = pl.Trainer(max_steps=ft["max_steps"], accelerator="gpu" if device.type == "cuda" else "cpu",
                             devices=1, logger=CSVLogger(str(out / "rba_finetuned"), name=f"{name}-s{self.seed}"),
                             enable_checkpointing=False, log_every_n_steps=10, precision=ft["precision"],
                             gradient_clip_val=ft["grad_clip"] or None, gradient_clip_algorithm="norm",
                             enable_progress_bar=False)
        rate = self._rates.setdefault(f"ood_detection: RbA {rba_arch(base)} fine-tunes", SteadyRate(
            "step", note=f"batch {ft['batch_size']}, crop {ft['crop_size']}, {ft['precision']}; after the first step"))
        trainer.callbacks.insert(0, steady_rate_callback(rate, 1))
        trainer.fit(module, loader)
        with atomic_dir(folder) as tmp:
            module.model.save_pretrained(tmp)
            write_json_atomic(Path(tmp) / "finetune.json", settings)
        return str(folder)
