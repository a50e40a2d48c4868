"""The calibrate stage: fit temperature scaling on calibration sets, measure ECE on real targets.

Inputs are the evaluation engine's calib_sample.npz files under `<results_root>/<model>/<dataset key>/`.
For each (model, calibration set, method) the job fits the temperatures once, writes them with the ECE of
every target before/after TS to `<output_dir>/<set keys>/<method tag>/<model>.json`, and records the item in
a manifest (a re-run skips it; new targets are added from the stored temperatures without refitting).
Every run rewrites the tidy tables `calibration.{parquet,csv}` (one row per model, calibration set, method,
target and metric: ece_raw, ece_ts, ece_rel_improvement) and `calibration_summary.{parquet,csv}` (success
rate = share of models with ECE_TS < ECE_raw, and the mean relative improvement).

Calibration and test images must be disjoint (the relis protocol splits, synthrel/conf/dataset/protocol_splits.yaml):
each record keeps the image ids of its calibration set and of every target, the table has the number of
images they share (`n_shared_images`), and a run whose sets share images stops before fitting anything
unless `allow_overlap` is set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from synthrel.calibration.data import CALIB_SAMPLE_FILE, CalibSample, load_image_ids
from synthrel.calibration.summary import success_summary
from synthrel.calibration.temperature import (
    Method,
    Objective,
    PerClassRule,
    TemperatureScaler,
    fit_temperature_scaler,
)
from synthrel.errors import ConfigError, DatasetError
from synthrel.jobs import (
    FILES_KEY,
    SETTINGS_KEY,
    ArtifactError,
    Manifest,
    Verify,
    atomic_path,
    changed_settings,
    damaged_files,
    describe_changes,
    describe_damage,
    exclusive_output,
    file_records,
    path_identity,
    plain_settings,
    positive_int,
    read_json_artifact,
    read_parquet_artifact,
    write_json_atomic,
)
from synthrel.metrics.calibration import top1_ece

log = logging.getLogger(__name__)

TABLE = "calibration"
SUMMARY = "calibration_summary"
COLUMNS = ["model", "family", "dataset", "domain", "generator", "metric", "cls", "value", "n_images", "profile",
           "calib_set", "method", "objective", "per_class_rule", "n_shared_images"]
#: Version of the per-item JSON record; older records (without image ids) are refitted.
RECORD_VERSION = 2


def write_table_atomic(df: pd.DataFrame, out_dir: Path, stem: str) -> None:
    """`stem`.parquet and `stem`.csv, each replaced in one rename."""
    with atomic_path(out_dir / f"{stem}.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(out_dir / f"{stem}.csv") as tmp:
        df.to_csv(tmp, index=False)


def normalise_sets(spec) -> dict[str, list[str]]:
    """Calibration sets as {name: [dataset keys pooled]} from a dict, or a list of keys / lists of keys."""
    if isinstance(spec, dict):
        sets = {str(name): [keys] if isinstance(keys, str) else list(keys) for name, keys in spec.items()}
    elif isinstance(spec, (list, tuple)):
        sets = {}
        for entry in spec:
            keys = [entry] if isinstance(entry, str) else list(entry)
            sets["+".join(keys)] = keys
    else:
        raise ConfigError(f"stages.calibrate.calibration_sets must be a dict or a list, got {spec!r}")
    empty = [name for name, keys in sets.items() if not keys]
    if not sets or empty:
        raise ConfigError(f"stages.calibrate.calibration_sets: every set needs at least one dataset key ({spec!r})")
    return sets


@dataclass
class CalibrateJob:
    """Temperature scaling fitted per model on each calibration set and evaluated on each target."""

    results_root: str
    output_dir: str
    calibration_sets: dict | list = field(default_factory=lambda: {"cityscapes": ["cityscapes"]})
    targets: list[str] = field(default_factory=list)
    models: list[str] | None = None
    methods: list[Method] = field(default_factory=lambda: ["global"])
    objective: Objective = "ece_grid"
    per_class_rule: PerClassRule = "per_channel"
    n_clusters: int = 4
    allow_overlap: bool = False  # fit and test on sets that share images (off in the paper's protocol)
    seed: int = 0
    profile: str = "paper"
    force: bool = False
    verify: Verify = "hash"  # what a re-run checks of the fits it skips
    device: str = "auto"

    def __post_init__(self):
        self.calibration_sets = normalise_sets(self.calibration_sets)
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if not self.targets or any(t is None for t in self.targets):
            raise ConfigError(
                f"stages.calibrate.targets is {self.targets!r}: list the real dataset keys to evaluate on, "
                "e.g. stages.calibrate.targets=[acdc_rain] (the domain has no real_dataset)"
            )
        positive_int(self.n_clusters, "stages.calibrate.n_clusters")

    # ------------------------------------------------------------------------------------------ naming
    def method_tag(self, method: str) -> str:
        """Folder/table name of a method with the settings that change its result."""
        parts = [method]
        if self.objective != "ece_grid":
            parts.append(self.objective)
        if "per_class" in method:
            parts.append(self.per_class_rule)
        if method.startswith("cluster"):
            parts.append(f"k{self.n_clusters}-s{self.seed}")
        return "-".join(parts)

    def _sample_path(self, model: str, key: str) -> Path:
        return Path(self.results_root) / model / key / CALIB_SAMPLE_FILE

    def find_models(self) -> list[str]:
        needed = sorted({k for keys in self.calibration_sets.values() for k in keys} | set(self.targets))
        root = Path(self.results_root)
        if self.models is not None:
            for model in self.models:
                for key in needed:
                    if not self._sample_path(model, key).is_file():
                        raise DatasetError(f"{self._sample_path(model, key)} is missing: evaluate model {model!r} "
                                           f"on {key!r} first (stages.evaluate)")
            return list(self.models)
        if not root.is_dir():
            raise DatasetError(f"results root {root} does not exist (stages.calibrate.results_root); "
                               "run the evaluate stage first")
        models = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            missing = [k for k in needed if not self._sample_path(folder.name, k).is_file()]
            if missing:
                log.warning("calibrate: skipping model %s: no calib_sample.npz for %s", folder.name, missing)
            else:
                models.append(folder.name)
        if not models:
            raise DatasetError(f"no model under {root} has calibration samples for all of {needed}")
        return models

    def check_disjoint(self, models: list[str]) -> None:
        """Refuse calibration sets that share images with a target, unless `allow_overlap`."""
        ids: dict[tuple[str, str], set[str]] = {}

        def image_ids(model: str, key: str) -> set[str]:
            if (model, key) not in ids:
                ids[model, key] = load_image_ids(self._sample_path(model, key))
            return ids[model, key]

        for model in models:
            for name, keys in self.calibration_sets.items():
                calib = set().union(*(image_ids(model, k) for k in keys))
                for target in self.targets:
                    shared = sorted(calib & image_ids(model, target))
                    if not shared:
                        continue
                    if not self.allow_overlap:
                        raise ConfigError(
                            f"calibration set {name!r} ({'+'.join(keys)}) and target {target!r} share "
                            f"{len(shared)} image(s) (model {model}), e.g. {shared[:3]}: temperatures would be "
                            "tested on images they were fitted on. Use disjoint splits (the relis protocol: "
                            "cityscapes_calib / acdc_<condition>_calib / idd_calib to fit, the _test sets to "
                            "test; synthrel/conf/dataset/protocol_splits.yaml), or accept it with "
                            "stages.calibrate.allow_overlap=true"
                        )
                    log.warning("calibrate: %s and %s share %d image(s) (allow_overlap=true)", name, target,
                                len(shared))

    def _target_meta(self, model: str, key: str) -> dict:
        """family / domain / generator / profile / n_images of a target, from its metrics table."""
        meta = {"family": None, "domain": None, "generator": None, "profile": self.profile, "n_images": None}
        table = Path(self.results_root) / model / key / "metrics.parquet"
        if table.is_file():
            df = read_parquet_artifact(table, "a metrics table", "Re-run the evaluate stage on this (model, "
                                       "dataset) pair (it redoes damaged pairs)")
            for column in meta:
                if column in df.columns and len(df):
                    meta[column] = df[column].iloc[0]
        return meta

    # --------------------------------------------------------------------------------------------- run
    def run(self) -> dict:
        from synthrel.runtime import resolve_device

        device = resolve_device(self.device)
        with exclusive_output(self.output_dir, wait=True):  # jobs of one sweep share the task's folder
            return self._run(device)

    def fit_settings(self, model: str, keys: list[str]) -> dict:
        """What a fit depends on: the calibration samples (the evaluate stage's files) and the fit settings."""
        return {"calib_samples": {k: path_identity(self._sample_path(model, k)) for k in keys},
                "objective": self.objective, "per_class_rule": self.per_class_rule, "n_clusters": self.n_clusters,
                "seed": self.seed}

    def _run(self, device) -> dict:
        out = Path(self.output_dir)
        manifest = Manifest(out / "manifest.jsonl", key="item")
        latest = {r["item"]: r for r in manifest.read()}
        models = self.find_models()
        self.check_disjoint(models)
        items = [(m, name, keys, method) for m in models for name, keys in self.calibration_sets.items()
                 for method in self.methods]
        bar = tqdm(items, desc="calibrate", initial=0)
        fitted = 0
        for model, name, keys, method in bar:
            bar.set_description(f"calibrate {model} on {name} ({method})")
            item = f"{'+'.join(keys)}|{self.method_tag(method)}|{model}"
            path = out / "+".join(keys) / self.method_tag(method) / f"{model}.json"
            record = None if self.force else self._recorded(out, latest.get(item))
            expected = self.fit_settings(model, keys)
            changed = changed_settings((record or {}).get(SETTINGS_KEY), expected) if record else {}
            if changed:
                log.info("calibrate %s: fitting again, changed since the last run: %s", item, describe_changes(changed))
            fitted_now = record is None or record.get("version") != RECORD_VERSION or bool(changed)
            if fitted_now:
                record = {**self._fit(model, name, keys, method, device), SETTINGS_KEY: plain_settings(expected)}
                fitted += 1
            dropped = False
            for target, result in list(record["targets"].items()):
                sample = path_identity(self._sample_path(model, target))
                if result.get("sample") != sample:  # the target was evaluated again (or by an older synthrel)
                    log.info("calibrate %s: target %s evaluated again since its ECE was measured; measuring again",
                             item, target)
                    del record["targets"][target]
                    dropped = True
            missing = [t for t in self.targets if t not in record["targets"]]
            if missing or dropped or fitted_now or self.force:
                scaler = TemperatureScaler.from_dict(record["scaler"])
                for target in missing:
                    record["targets"][target] = {
                        **self._evaluate(scaler, model, target, record["calib_image_ids"]),
                        "sample": path_identity(self._sample_path(model, target))}
                write_json_atomic(path, record)
                manifest.append({"item": item, "path": str(path.relative_to(out)), "seed": self.seed,
                                 FILES_KEY: file_records(out, [path])})
        table = self._table(out, manifest)
        write_table_atomic(table, out, TABLE)
        summary = success_summary(table)
        write_table_atomic(summary, out, SUMMARY)
        log.info("calibrate: %d model(s), %d fit(s) this run; success rates:\n%s", len(models), fitted,
                 summary.to_string(index=False))
        return {"output_dir": str(out), "n_models": len(models), "fitted": fitted,
                "success_rate": {f"{r.calib_set}|{r.method}|{r.dataset}": float(r.success_rate)
                                 for r in summary.itertuples()}}

    def _recorded(self, out: Path, entry: dict | None) -> dict | None:
        """The fit a manifest entry recorded, or None (fit again) when its file is missing, truncated, changed
        (sizes; with verify=hash also SHA-256) or unreadable; the log says which."""
        if entry is None:
            return None
        damaged = damaged_files(out, entry.get(FILES_KEY) or {}, self.verify)
        if damaged:
            log.warning("calibrate %s: fitting again, its result file is missing, truncated or changed: %s",
                        entry["item"], describe_damage(damaged))
            return None
        try:
            return read_json_artifact(out / entry["path"], "a calibration result", "It is fitted again",
                                      keys=("model", "targets", "scaler"))
        except ArtifactError as error:
            log.warning("calibrate %s: fitting again: %s", entry["item"], error)
            return None

    def _fit(self, model: str, name: str, keys: list[str], method: str, device) -> dict:
        sample = CalibSample.concat([CalibSample.load(self._sample_path(model, k)) for k in keys])
        if method.startswith("cluster"):
            _require_features(sample, model, keys)
        scaler = fit_temperature_scaler(
            sample.logits, sample.labels, method=method, objective=self.objective,
            per_class_rule=self.per_class_rule, image_index=sample.image_index, features=sample.features,
            n_clusters=self.n_clusters, seed=self.seed, device=device,
        )
        return {
            "version": RECORD_VERSION, "model": model, "calib_set": name, "calib_datasets": keys, "method": self.method_tag(method),
            "objective": self.objective, "per_class_rule": scaler.per_class_rule, "n_clusters": self.n_clusters,
            "seed": self.seed, "n_calib_pixels": int(len(sample.labels)), "n_calib_images": sample.n_images,
            "calib_image_ids": sorted(set(sample.image_ids.tolist())), "allow_overlap": self.allow_overlap,
            "scaler": scaler.to_dict(), "targets": {},
        }

    def _evaluate(self, scaler: TemperatureScaler, model: str, target: str, calib_ids: list[str]) -> dict:
        sample = CalibSample.load(self._sample_path(model, target))
        if scaler.centers is not None:
            _require_features(sample, model, [target])
        scaled = scaler.scale(sample.logits, sample.image_index, sample.features)
        ids = sorted(set(sample.image_ids.tolist()))
        return {"ece_raw": top1_ece(sample.logits, sample.labels), "ece_ts": top1_ece(scaled, sample.labels),
                "n_pixels": int(len(sample.labels)), "n_images": sample.n_images, "image_ids": ids,
                "n_shared_images": len(set(ids) & set(calib_ids))}

    def _table(self, out: Path, manifest: Manifest) -> pd.DataFrame:
        """Rows of every recorded item for the current targets (latest record per item)."""
        latest = {r["item"]: r for r in manifest.read()}
        rows = []
        for record in latest.values():
            item = read_json_artifact(out / record["path"], "a calibration result", "Run the calibrate stage "
                                      "again: it fits damaged items again", keys=("model", "targets"))
            for target, res in item["targets"].items():
                meta = self._target_meta(item["model"], target)
                n_images = meta.pop("n_images") or res["n_images"]
                ece_raw, ece_ts = res["ece_raw"], res["ece_ts"]
                rel = (ece_raw - ece_ts) / ece_raw if ece_raw > 0 else float("nan")
                for metric, value in (("ece_raw", ece_raw), ("ece_ts", ece_ts), ("ece_rel_improvement", rel)):
                    rows.append({"model": item["model"], **meta, "dataset": target, "metric": metric, "cls": "",
                                 "value": float(value), "n_images": int(n_images), "calib_set": item["calib_set"],
                                 "method": item["method"], "objective": item["objective"],
                                 "per_class_rule": item["per_class_rule"],
                                 "n_shared_images": res.get("n_shared_images")})  # None: older record
        table = pd.DataFrame(rows, columns=COLUMNS)
        table["n_shared_images"] = table["n_shared_images"].astype("Int64")
        return table


def _require_features(sample: CalibSample, model: str, datasets: list[str]) -> None:
    if not sample.has_features:
        raise ConfigError(
            f"cluster TS assigns images by their backbone features, but {model!r} on {datasets} was evaluated without "
            "them; re-run the evaluate stage with stages.evaluate.features=windows (or whole, relis' definition), "
            "or in the same run as this calibrate stage (it then takes them)")
