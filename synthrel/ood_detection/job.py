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

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from synthrel.calibration.job import write_table_atomic
from synthrel.errors import ConfigError, DatasetError, unknown_name
from synthrel.evaluation.results import is_done
from synthrel.jobs import Manifest, atomic_path, positive_int, write_json_atomic
from synthrel.metrics.ood import OODAccumulator, dataset_rows, describe_row

log = logging.getLogger(__name__)

TABLE = "ood_detection"
COLUMNS = ["model", "family", "dataset", "domain", "generator", "metric", "cls", "value", "n_images", "profile",
           "convention", "score"]
FINETUNE_KEYS = {"enabled", "base", "outliers", "inlier_dataset", "inlier_split", "outlier_dataset", "coco_root",
                 "mix_prob", "max_steps", "batch_size", "crop_size", "lr", "weight_decay", "num_workers"}
FINETUNE_DEFAULTS = dict(enabled=False, base="rba_swin_b", outliers="synthetic", inlier_dataset="cityscapes",
                         inlier_split="train", outlier_dataset="ood_objects", coco_root=None, mix_prob=0.1,
                         max_steps=5000, batch_size=16, crop_size=[512, 1024], lr=1e-4, weight_decay=0.05,
                         num_workers=2)
OUTLIER_SOURCES = ("synthetic", "coco")


def _exact_metrics_in(folder: Path) -> bool:
    """RbA metrics.json of this version (older ones held histogram metrics, without `rows`: evaluated again)."""
    path = folder / "metrics.json"
    return path.is_file() and "rows" in json.loads(path.read_text())


@dataclass
class OODDetectionJob:
    results_root: str
    output_dir: str
    datasets: list[str] = field(default_factory=lambda: ["road_anomaly"])
    dataset_configs: dict = field(default_factory=dict)
    dataset_keys: dict = field(default_factory=dict)  # dataset name -> results folder name (default: the name)
    models: list[str] | None = None
    zoo_scores: bool = True
    rba: dict = field(default_factory=dict)  # {models: {name: hub id or folder}, finetune: {...}}
    seed: int = 0
    profile: str = "paper"
    tiny: bool = False
    force: bool = False
    device: str = "auto"
    report_dir: str | None = None  # the analysis folder the report stage gathers (tables + ood_outputs.json)

    def __post_init__(self):
        from synthrel.config import to_plain as plain

        self.dataset_configs = plain(self.dataset_configs) or {}
        self.dataset_keys = plain(self.dataset_keys) or {}
        self.datasets = list(plain(self.datasets) or [])
        self.rba = plain(self.rba) or {}
        if not self.datasets:
            raise ConfigError("stages.ood_detection.datasets is empty; e.g. [road_anomaly, ood_objects]")
        unexpected = set(self.rba) - {"models", "finetune"}
        if unexpected:
            raise ConfigError(f"stages.ood_detection.rba: unknown key(s) {sorted(unexpected)}; valid: models, finetune")
        self.rba_models = dict(self.rba.get("models") or {})
        unexpected = set(self.rba.get("finetune") or {}) - FINETUNE_KEYS
        if unexpected:
            raise ConfigError(f"stages.ood_detection.rba.finetune: unknown key(s) {sorted(unexpected)}; "
                              f"valid: {', '.join(sorted(FINETUNE_KEYS))}")
        self.finetune = {**FINETUNE_DEFAULTS, **(self.rba.get("finetune") or {})}
        if self.finetune["enabled"]:
            if self.finetune["base"] not in self.rba_models:
                raise unknown_name("RbA base model", self.finetune["base"], self.rba_models,
                                   "stages.ood_detection.rba.finetune.base")
            if self.finetune["outliers"] not in OUTLIER_SOURCES:
                raise unknown_name("outlier source", self.finetune["outliers"], OUTLIER_SOURCES,
                                   "stages.ood_detection.rba.finetune.outliers")
            positive_int(self.finetune["max_steps"], "stages.ood_detection.rba.finetune.max_steps")
            positive_int(self.finetune["batch_size"], "stages.ood_detection.rba.finetune.batch_size")
        if self.rba_models:
            for name in self.datasets:
                if name not in self.dataset_configs:
                    raise unknown_name("dataset", name, self.dataset_configs, "stages.ood_detection.datasets")

    def key(self, dataset: str) -> str:
        return self.dataset_keys.get(dataset, dataset)

    def run(self) -> dict:
        out = Path(self.output_dir)
        rows = self.zoo_rows() if self.zoo_scores else []
        if self.rba_models:
            rows += self.rba_rows(out)
        table = pd.DataFrame(rows, columns=COLUMNS)
        write_table_atomic(table, out, TABLE)
        log.info("ood_detection: %d row(s) for %d model(s) written to %s", len(table), table["model"].nunique(), out)
        if self.report_dir and len(table):
            self.write_report_tables(table, out, Path(self.report_dir))
        return {"output_dir": str(out), "n_rows": len(table), "models": sorted(table["model"].unique().tolist())}

    def write_report_tables(self, table: pd.DataFrame, out: Path, report_dir: Path) -> None:
        """One layout per convention (rows model and score, columns dataset and metric, in %) and their index
        `ood_outputs.json`, which the report stage gathers."""
        from synthrel.reporting import save_table

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
            index.append({"kind": "table", "title": title, **save_table(layout, report_dir, f"ood_{convention}")})
        index.append({"kind": "data", "title": "OOD detection, every row (tidy)", "csv": str(out / f"{TABLE}.csv")})
        write_json_atomic(report_dir / "ood_outputs.json", index)

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
                table = pd.read_parquet(folder / "metrics.parquet") if is_done(folder) else None
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
    def rba_rows(self, out: Path) -> list[dict]:
        import hydra

        from synthrel.runtime import resolve_device

        device = resolve_device(self.device)
        models = dict(self.rba_models)
        if self.tiny:
            from synthrel.tiny.mask2former import build_tiny_mask2former

            for path in set(models.values()):
                if not Path(path).exists():  # the tiny profile builds its Mask2Former on first use
                    build_tiny_mask2former(path, seed=self.seed)
        if self.finetune["enabled"]:
            name, path = self.run_finetune(out, models[self.finetune["base"]], device)
            models[name] = path
        manifest = Manifest(out / "rba" / "manifest.jsonl", key="item")
        done = manifest.done()
        rows = []
        for model, path in models.items():
            loaded = None
            for dataset in self.datasets:
                folder = out / "rba" / model / self.key(dataset)
                item = f"{model}|{self.key(dataset)}"
                if item not in done or self.force or not _exact_metrics_in(folder):
                    if loaded is None:
                        from synthrel.ood_detection.rba import load_mask2former

                        loaded = load_mask2former(path).to(device)
                    ds = hydra.utils.instantiate(self.dataset_configs[dataset])
                    self._rba_evaluate(loaded, ds, folder, desc=f"RbA {model} on {dataset}")
                    manifest.append({"item": item, "model_path": str(path), "seed": self.seed})
                rows += self._rba_pair_rows(model, dataset, folder)
        return rows

    def _rba_evaluate(self, model, dataset, folder: Path, desc: str) -> None:
        import torch

        from synthrel.ood_detection.rba import rba_predict

        if not dataset.has_ood:
            raise DatasetError(f"dataset {dataset.name!r} has no OOD masks; RbA needs an OOD dataset")
        device = next(model.parameters()).device
        acc = OODAccumulator(["rba"], device)
        ids = []
        for index in tqdm(range(len(dataset)), desc=desc):
            sample = dataset[index]
            with torch.inference_mode():
                scores = rba_predict(model, sample["image"][None], device)[0]  # (1, H, W), on the device
            acc.update(scores[None], torch.from_numpy(sample["ood"][None]).to(device))
            ids.append(sample["id"])
        result = acc.result()
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "ood_per_image.npz") as tmp:
            np.savez(tmp, per_image=result["per_image"], image_pixels=result["image_pixels"],
                     scores=np.asarray(result["scores"]), metrics=np.asarray(result["metrics"]),
                     image_ids=np.asarray(ids, dtype=str))
        write_json_atomic(folder / "metrics.json", {"rows": [list(r) for r in dataset_rows(result)]})

    def _rba_pair_rows(self, model: str, dataset: str, folder: Path) -> list[dict]:
        result = json.loads((folder / "metrics.json").read_text())
        meta = {"model": model, "family": "RbA", "dataset": self.key(dataset), "domain": None,
                "generator": None, "profile": self.profile}
        rows = []
        for metric, value, n_images in result["rows"]:
            convention, score = describe_row(metric)
            rows.append({**meta, "metric": metric, "cls": "", "value": value, "n_images": n_images,
                         "convention": convention, "score": score})
        return rows

    # --------------------------------------------------------------------------------------- finetune
    def run_finetune(self, out: Path, base_path: str, device) -> tuple[str, str]:
        """Fine-tune the base RbA with outliers; returns (model name, saved folder). Skipped when saved."""
        ft = self.finetune
        name = f"{ft['base']}+{ft['outliers']}"
        folder = out / "rba_finetuned" / f"{name}-s{self.seed}"
        if (folder / "config.json").is_file() and not self.force:
            return name, str(folder)
        import hydra
        import pytorch_lightning as pl
        from pytorch_lightning.loggers import CSVLogger
        from torch.utils.data import DataLoader

        from synthrel.ood_detection.outliers import CocoObjects, OutlierMixDataset, collate_outliers
        from synthrel.ood_detection.rba import RbAFineTuner

        pl.seed_everything(self.seed, workers=True)
        inliers = hydra.utils.instantiate(self.dataset_configs[ft["inlier_dataset"]], split=ft["inlier_split"])
        outliers = coco = None
        if ft["outliers"] == "synthetic":
            outliers = hydra.utils.instantiate(self.dataset_configs[ft["outlier_dataset"]])
        else:
            coco = CocoObjects(ft["coco_root"])
        data = OutlierMixDataset(inliers, outliers, coco, mix_prob=ft["mix_prob"], seed=self.seed,
                                 num_samples=ft["max_steps"] * ft["batch_size"], crop_size=ft["crop_size"])
        loader = DataLoader(data, batch_size=ft["batch_size"], num_workers=ft["num_workers"],
                            collate_fn=collate_outliers)
        module = RbAFineTuner(base_path, lr=ft["lr"], weight_decay=ft["weight_decay"], max_steps=ft["max_steps"])
        trainer = pl.Trainer(max_steps=ft["max_steps"], accelerator="gpu" if device.type == "cuda" else "cpu",
                             devices=1, logger=CSVLogger(str(out / "rba_finetuned"), name=f"{name}-s{self.seed}"),
                             enable_checkpointing=False, log_every_n_steps=10)
        trainer.fit(module, loader)
        tmp = folder.with_name(f".{folder.name}.tmp")
        module.model.save_pretrained(tmp)
        write_json_atomic(tmp / "finetune.json", {**ft, "seed": self.seed, "base_path": base_path})
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
        return name, str(folder)
