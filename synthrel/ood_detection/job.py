"""The ood_detection stage: OOD metrics of the zoo (from the engine's histograms) and of RbA, in a tidy table.

Zoo (spec S10): for every model with `<results_root>/<model>/<dataset key>/ood_hist.npz`, pooled metrics in
the RbA convention (auroc_/ap_/fpr95_<score>) and the mean over images of GenVal's per-image metrics
(img_auroc_/img_fpr95_/img_aupr_in_/img_aupr_out_<score>) for msp, max_logit and entropy.
RbA (spec S11): each Mask2Former of `rba.models` (hub id or folder), and optionally its outlier-exposure
fine-tuned copy (`rba.finetune`), is run on the OOD datasets; the RbA score is histogrammed over its range
[-19, 19] in 2^16 bins (pooled) and scored exactly per image. Finished (model, dataset) pairs are skipped.
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
from synthrel.jobs import Manifest, atomic_path, positive_int, write_json_atomic
from synthrel.metrics.ood import ood_metrics_from_counts, per_image_ood_metrics, score_histograms

log = logging.getLogger(__name__)

TABLE = "ood_detection"
COLUMNS = ["model", "family", "dataset", "domain", "generator", "metric", "cls", "value", "n_images", "profile",
           "convention", "score"]
POOLED_METRICS = ("auroc", "ap", "fpr95")
IMAGE_METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")
RBA_EDGES = np.linspace(-19.0, 19.0, 2**16 + 1)  # s = -sum_c tanh(l_c) over 19 classes lies in (-19, 19)
FINETUNE_KEYS = {"enabled", "base", "outliers", "inlier_dataset", "inlier_split", "outlier_dataset", "coco_root",
                 "mix_prob", "max_steps", "batch_size", "crop_size", "lr", "weight_decay", "num_workers"}
FINETUNE_DEFAULTS = dict(enabled=False, base="rba_swin_b", outliers="synthetic", inlier_dataset="cityscapes",
                         inlier_split="train", outlier_dataset="ood_objects", coco_root=None, mix_prob=0.1,
                         max_steps=5000, batch_size=16, crop_size=[512, 1024], lr=1e-4, weight_decay=0.05,
                         num_workers=2)
OUTLIER_SOURCES = ("synthetic", "coco")


def _mean_image_metrics(per_image_pos: np.ndarray, per_image_neg: np.ndarray) -> tuple[dict, int]:
    """Mean of GenVal per-image metrics over the images that hold both OOD and ID pixels."""
    values = [ood_metrics_from_counts(p, n, convention="genval") for p, n in zip(per_image_pos, per_image_neg,
                                                                               strict=True)
              if p.sum() > 0 and n.sum() > 0]
    if not values:
        return {m: float("nan") for m in IMAGE_METRICS}, 0
    return {m: float(np.mean([v[m] for v in values])) for m in IMAGE_METRICS}, len(values)


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
        return {"output_dir": str(out), "n_rows": len(table), "models": sorted(table["model"].unique().tolist())}

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
                if not (folder / "ood_hist.npz").is_file():
                    if self.models:
                        raise DatasetError(f"{folder / 'ood_hist.npz'} is missing: evaluate {model} on {dataset}")
                    log.warning("ood_detection: no ood_hist.npz in %s, skipped", folder)
                    continue
                rows += self._zoo_pair_rows(model, dataset, folder)
        return rows

    def _meta(self, folder: Path, model: str, dataset: str) -> dict:
        meta = {"model": model, "family": None, "dataset": self.key(dataset), "domain": None, "generator": None,
                "profile": self.profile}
        if (folder / "metrics.parquet").is_file():
            df = pd.read_parquet(folder / "metrics.parquet")
            for column in ("family", "domain", "generator", "profile"):
                if column in df.columns and len(df):
                    meta[column] = df[column].iloc[0]
        return meta

    def _zoo_pair_rows(self, model: str, dataset: str, folder: Path) -> list[dict]:
        meta = self._meta(folder, model, dataset)
        with np.load(folder / "ood_hist.npz", allow_pickle=False) as f:
            pooled, per_image = f["pooled"], f["per_image"]  # [..., 0, :] ID, [..., 1, :] OOD, ascending raw score
            scores, high_is_id = [str(s) for s in f["scores"]], f["high_is_id"]
        rows = []
        for s, score in enumerate(scores):
            flip = slice(None, None, -1) if high_is_id[s] else slice(None)  # bins ascending in anomaly score
            neg, pos = pooled[s, 0, flip], pooled[s, 1, flip]
            n_images = len(per_image)
            for metric, value in ood_metrics_from_counts(pos, neg, "rba").items():
                if metric in POOLED_METRICS:
                    rows.append({**meta, "metric": f"{metric}_{score}", "cls": "", "value": value,
                                 "n_images": n_images, "convention": "rba_pooled", "score": score})
            means, n_valid = _mean_image_metrics(per_image[:, s, 1, flip], per_image[:, s, 0, flip])
            for metric, value in means.items():
                rows.append({**meta, "metric": f"img_{metric}_{score}", "cls": "", "value": value,
                             "n_images": n_valid, "convention": "genval_per_image", "score": score})
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
                if item not in done or self.force or not (folder / "metrics.json").is_file():
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
        pos = np.zeros(len(RBA_EDGES) - 1, np.int64)
        neg = np.zeros_like(pos)
        per_image = []
        device = next(model.parameters()).device
        for index in tqdm(range(len(dataset)), desc=desc):
            sample = dataset[index]
            with torch.inference_mode():
                scores = rba_predict(model, sample["image"][None], device)[0][0].cpu().numpy()
            valid = sample["ood"] <= 1  # void excluded, for the per-image metrics too (as the engine does)
            p, n = score_histograms(scores[valid], sample["ood"][valid] == 1, RBA_EDGES)
            pos += p
            neg += n
            metrics = per_image_ood_metrics(scores[valid], sample["ood"][valid])
            per_image.append({"id": sample["id"], **metrics})
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "ood_hist.npz") as tmp:
            np.savez(tmp, pos=pos, neg=neg, edges=RBA_EDGES)
        write_json_atomic(folder / "metrics.json", {"pooled": ood_metrics_from_counts(pos, neg, "rba"),
                                                    "per_image": per_image})

    def _rba_pair_rows(self, model: str, dataset: str, folder: Path) -> list[dict]:
        result = json.loads((folder / "metrics.json").read_text())
        meta = {"model": model, "family": "RbA", "dataset": self.key(dataset), "domain": None,
                "generator": None, "profile": self.profile}
        n_images = len(result["per_image"])
        rows = [{**meta, "metric": f"{m}_rba", "cls": "", "value": result["pooled"][m], "n_images": n_images,
                 "convention": "rba_pooled", "score": "rba"} for m in POOLED_METRICS]
        valid = [r for r in result["per_image"] if not np.isnan(r["auroc"])]
        for m in IMAGE_METRICS:
            value = float(np.mean([r[m] for r in valid])) if valid else float("nan")
            rows.append({**meta, "metric": f"img_{m}_rba", "cls": "", "value": value, "n_images": len(valid),
                         "convention": "genval_per_image", "score": "rba"})
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
