"""The forecast stage: check the user's model, evaluate it on the synthetic sets, forecast its real values.

For each predictor domain and metric, real ~ synthetic is fitted by OLS over the reference zoo
(synthrel.forecast.stats) and the model's real value is predicted with a prediction interval; the zoo's
leave-one-model-out MAE and interval coverage stand beside each forecast. The zoo's values come from
`results_root` (then published as a reference table) or from a reference table someone else published.
Outputs (tables, figures, the index the report reads) go to the analysis folder with a `forecast` prefix.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
from hydra.errors import InstantiationException

from synthrel.analysis import correlation
from synthrel.analysis.aggregate import load_results
from synthrel.analysis.provenance import provenance
from synthrel.config import to_plain
from synthrel.data.build import build_dataset
from synthrel.errors import ConfigError, DatasetError, SynthrelError, unknown_name
from synthrel.evaluation.job import EvaluateJob
from synthrel.forecast import figures, qualitative, reference
from synthrel.forecast.atc import METRIC as ATC_METRIC
from synthrel.forecast.atc import atc_rows
from synthrel.forecast.stats import forecast_cell, metric_range
from synthrel.jobs import atomic_path, positive_int, write_json_atomic
from synthrel.reporting import save_table
from synthrel.runtime import resolve_device
from synthrel.zoo.predictor import Segmenter, build_segmenter, check_on_batch
from synthrel.zoo.registry import ZooEntry, zoo_entries

log = logging.getLogger(__name__)

SECTION = "Forecast"
USER_ZOO = "forecast"  # results of forecast models: <evaluate.output_dir>/forecast/<model key>/<dataset>
OUTPUTS_INDEX = "forecast_outputs.json"
SETTINGS_FILE = "forecast_settings.json"
#: predictor kinds of `stages.forecast.predictors` (synthetic, the forecast itself, always runs)
Predictor = Literal["synthetic", "clean", "corruptions", "synthetic+clean", "atc"]
PREDICTORS = get_args(Predictor)
ATC = "ATC (Cityscapes val -> real images)"
ATC_FORECASTS = ("mIoU", "pixel_acc")  # accuracy-type metrics, the ones ATC's estimate of pixel accuracy predicts
CLEAN = "cityscapes (clean)"  # accuracy on the line: the in-distribution Cityscapes val result as predictor


@dataclass
class ForecastJob:
    model: dict
    evaluate: dict
    output_dir: str
    real_datasets: dict[str, str]
    reference: str | None = None
    results_root: str | None = None
    reference_out: str | None = None
    generator: str = "sd15"
    metrics: list[str] = field(default_factory=lambda: ["mIoU", "ece"])
    level: float = 0.9
    predictors: list[Predictor] = field(default_factory=lambda: list(PREDICTORS[1:]))
    zoo: dict | None = None  # the reference zoo's entries, for the qualitative figures
    qualitative_models: list[str] | None = None  # None: the zoo's strongest and weakest; []: no Fig. 15/16
    qualitative_images: int = 2  # inpainted images in Fig. 16 (Fig. 15: one per domain)
    profile: str = "paper"
    run_dir: str | None = None
    seed: int = 0  # the run's seed (inherited): the evaluation's, unless `evaluate.seed` sets its own

    def __post_init__(self):
        self.model = dict(to_plain(self.model) or {})
        self.evaluate = dict(to_plain(self.evaluate) or {})
        self.real_datasets = dict(to_plain(self.real_datasets) or {})
        self.metrics = list(to_plain(self.metrics) or [])
        self.predictors = list(to_plain(self.predictors) or [])
        self.comparison = pd.DataFrame()
        self.zoo = to_plain(self.zoo) or {}
        self.qualitative_models = to_plain(self.qualitative_models)
        positive_int(self.qualitative_images, "stages.forecast.qualitative_images")
        if not self.model.get("framework"):
            raise ConfigError("no model to forecast: choose one with model=mmseg (model.config=<config.py> "
                              "model.checkpoint=<checkpoint>), model=transformers (model.config=<hub id or folder>) "
                              "or model=python (model.builder._target_=<package.function>); see synthrel/conf/model")
        unset = [f"model.{k}" for k, v in self.model.items() if v == "???"]
        unset += ["model.builder._target_"] if (self.model.get("builder") or {}).get("_target_") == "???" else []
        if unset:
            raise ConfigError(f"model={self.model['framework']} needs {', '.join(f'{k}=...' for k in unset)} on the "
                              f"command line (synthrel/conf/model/{self.model['framework']}.yaml says what each is)")
        if not 0 < self.level < 1:
            raise ConfigError(f"`stages.forecast.level` must be in (0, 1), got {self.level}")
        if not self.reference and not self.results_root:
            raise ConfigError("stages.forecast needs the zoo's `results_root` or a published `reference` table")
        spec = dict(self.model)
        self.key = spec.pop("key", None) or "my_model"
        self.entry: ZooEntry = zoo_entries({"models": {self.key: spec}})[self.key]
        self.spec = spec
        self._labels = self._evaluator(list(self.evaluate.get("datasets") or [])).labels  # validates `evaluate`

    def run(self) -> dict:
        out = Path(self.output_dir)
        table, meta, reference_path = self._reference()
        if set(table["profile"].astype(str)) != {self.profile}:
            raise ConfigError(f"the reference {reference_path} was made with profile {sorted(set(table['profile']))}"
                              f" but this run has profile={self.profile!r}; forecast with a reference of this profile")
        if self.key in set(table["model"]):
            log.warning("model %r is in the reference zoo: its reference rows are left out of the fits", self.key)
            table = table[table["model"] != self.key]
        datasets = self._available_datasets()
        segmenter = self._preflight(datasets)
        index = self._qualitative(segmenter, datasets, table, out)
        del segmenter
        summary = self._evaluator(list(datasets)).run()
        mine = load_results(Path(summary["results_dir"]) / self.key)
        mine = pd.concat([mine, atc_rows(Path(summary["results_dir"]) / self.key)], ignore_index=True)
        mine = mine[mine["dataset"].isin([self._labels(d)["key"] for d in datasets])]
        forecasts, loo = self.forecast(table, mine)
        index = self._write(forecasts, loo, table, mine, out) + index
        write_json_atomic(out / SETTINGS_FILE, {
            "job": {k: v for k, v in dataclasses.asdict(self).items() if k not in ("evaluate", "zoo", "model")},
            "model": {"key": self.key, **self.spec}, "reference": str(reference_path),
            "reference_provenance": {k: meta.get(k) for k in ("synthrel_version", "git_sha", "created", "sha256",
                                                               "profile", "zoo")},
            "method": f"OLS real ~ synthetic per (domain, metric) over the reference zoo; {100 * self.level:.0f}% "
                      "t prediction interval (bounded metrics clipped to [0, 1]); leave-one-model-out MAE, coverage "
                      f"and width; predictors compared the same way: synthetic, {', '.join(self.predictors)}",
            "profile": self.profile, "n_models": int(table["model"].nunique()), "sources": [str(reference_path)],
            **provenance(self.run_dir)})
        write_json_atomic(out / OUTPUTS_INDEX, index)
        log.info("forecast: %d cells for %s -> %s", int(forecasts["predicted"].notna().sum()), self.key, out)
        return {"forecast_dir": str(out), "forecast_table": str(out / "forecast.csv"),
                "reference_path": str(reference_path), "n_forecasts": int(forecasts["predicted"].notna().sum())}

    # -- steps ---------------------------------------------------------------------------------------------

    def _reference(self) -> tuple[pd.DataFrame, dict, Path]:
        if self.reference:
            table, meta = reference.read_reference(self.reference)
            return table, meta, Path(self.reference)
        table, meta = reference.build_reference(self.results_root, self.evaluate.get("dataset_configs"),
                                                self.evaluate.get("dataset_labels"))
        path = reference.write_reference(table, meta, self.reference_out or Path(self.output_dir) / "reference")
        return table, meta, path

    def _evaluator(self, datasets: list[str]) -> EvaluateJob:
        """The evaluate stage's job for the user's model alone, on `datasets`."""
        kwargs = {"seed": self.seed, **{k: v for k, v in self.evaluate.items() if not k.startswith("_")}}
        kwargs.update(zoo={"name": USER_ZOO, "models": {self.key: self.spec}}, models=[self.key], datasets=datasets)
        return EvaluateJob(**kwargs)

    def _available_datasets(self) -> dict:
        """The configured sets that are on disk (instantiated); the missing ones are logged and skipped."""
        configs = self.evaluate.get("dataset_configs") or {}
        found, missing = {}, []
        for name in self.evaluate.get("datasets") or []:
            if name not in configs:
                raise ConfigError(f"`stages.forecast.evaluate.datasets` names {name!r}, which is not a dataset; "
                                  f"valid: {', '.join(sorted(configs))}")
            try:
                found[name] = build_dataset(configs[name])
            except InstantiationException as e:  # hydra wraps the dataset's own error
                if not isinstance(e.__cause__, DatasetError):
                    raise
                missing.append(name)
                log.info("forecast: %s not on disk, skipped (%s)", name, str(e.__cause__).splitlines()[0])
        predictors = [n for n in found if self._labels(n)["generator"] == self.generator
                      and self._labels(n)["domain"] in self.real_datasets]
        if not predictors:
            raise DatasetError(f"no synthetic set of generator {self.generator!r} is on disk among "
                               f"{self.evaluate.get('datasets')} (missing: {missing}); generate them first "
                               "(`+experiment=covariate_fog` and the other covariate_* / ood_objects experiments, "
                               "or `+experiment=demo` on profile=tiny)")
        if missing:
            log.warning("forecast: %d set(s) not on disk, skipped: %s", len(missing), ", ".join(missing))
        return found

    def _preflight(self, datasets: dict) -> Segmenter:
        """Build the model and run it on two images of the first set, before any evaluation."""
        name, dataset = next(iter(datasets.items()))
        samples = [dataset[i] for i in range(min(2, len(dataset)))]
        samples = [s for s in samples if s["image"].shape == samples[0]["image"].shape]
        segmenter = build_segmenter(self.entry, resolve_device(self.evaluate.get("device", "cpu")),
                                    self.evaluate.get("precision", "fp32"), self.evaluate.get("cache_dir"))
        check_on_batch(segmenter, np.stack([s["image"] for s in samples]))
        log.info("forecast: model %s passed its test batch on %s", self.key, name)
        return segmenter

    def _qualitative(self, segmenter: Segmenter, datasets: dict, table: pd.DataFrame, out: Path) -> list[dict]:
        """Fig. 15 / Fig. 16 with the user's model beside zoo models (those that build here)."""
        if self.qualitative_models == []:
            return []
        segmenters = {f"{self.entry.display_name} (yours)": segmenter}
        for key in self._qualitative_zoo_models(table):
            entry = zoo_entries(self.zoo)[key]
            try:
                segmenters[f"{entry.display_name} (zoo)"] = build_segmenter(entry, segmenter.device, segmenter.precision,
                                                                 self.evaluate.get("cache_dir"))
            except SynthrelError as e:  # e.g. a published reference whose checkpoints are not here
                log.warning("forecast: zoo model %s left out of the qualitative figures: %s", key, e)
        predictors = {n: d for n, d in datasets.items() if self._labels(n)["generator"] == self.generator
                      and self._labels(n)["domain"] in self.real_datasets}
        shifts = {self._labels(n)["domain"]: d[0] for n, d in predictors.items() if not d.has_ood and d.has_labels}
        ood = [d[i] for d in predictors.values() if d.has_ood for i in range(min(self.qualitative_images, len(d)))]
        index = []
        if shifts:
            paths = qualitative.predictions_figure(shifts, segmenters, out / "forecast_fig15_predictions")
            index.append({"kind": "figure", "section": SECTION, "files": paths,
                          "title": "Fig. 15 style: generated images, their label maps, and the predictions of "
                                   f"{', '.join(segmenters)}"})
        if ood:
            paths = qualitative.ood_confidence_figure(ood[:self.qualitative_images], segmenters,
                                                      out / "forecast_fig16_ood_confidence")
            index.append({"kind": "figure", "section": SECTION, "files": paths,
                          "title": f"Fig. 16 style: max-softmax confidence on inpainted OOD objects, {', '.join(segmenters)}"})
        return index

    def _qualitative_zoo_models(self, table: pd.DataFrame) -> list[str]:
        """The configured zoo models, or the reference's strongest and weakest by mean mIoU on the synthetic sets."""
        known = zoo_entries(self.zoo)
        if self.qualitative_models is not None:
            for key in self.qualitative_models:
                if key not in known:
                    raise unknown_name("zoo model", key, known, key="stages.forecast.qualitative_models")
            return list(self.qualitative_models)
        miou = table[(table["metric"] == "mIoU") & (table["cls"] == "") & (table["generator"] == self.generator)]
        ranked = miou.groupby("model")["value"].mean().sort_values(ascending=False)
        ranked = [m for m in ranked.index if m in known]
        return list(dict.fromkeys(ranked[:1] + ranked[-1:]))

    def forecast(self, table: pd.DataFrame, mine: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """One row per (metric, domain) with the synthetic forecast, and one per (metric, domain, zoo model) of LOO;
        every predictor's forecast and LOO summary go to `self.comparison` (one row per (metric, domain,
        predictor))."""
        present = sorted(set(table.loc[table["cls"] == "", "metric"]))
        metrics = [m for pattern in self.metrics for m in present if fnmatch.fnmatchcase(m, pattern)]
        self.missing_rows = [  # the reasons a configured row is not in the table, under it in the report
            f"No {pattern} rows: no result of the reference zoo has this metric"
            + (" (OOD metrics come from evaluating the zoo on an OOD set: road_anomaly, ood_objects)"
               if pattern.startswith(("auroc", "ap_", "fpr95")) else "") + "."
            for pattern in self.metrics if not any(fnmatch.fnmatchcase(m, pattern) for m in present)]
        rows, loo_rows, comparison = [], [], []
        for metric in dict.fromkeys(metrics):
            zoo_rows, my_rows = ((r[r["metric"].isin([metric, ATC_METRIC]) & (r["cls"] == "")]) for r in (table, mine))
            for domain, real in self.real_datasets.items():
                y = _real_values(zoo_rows, metric, real)
                user_x = correlation.predictor_values(my_rows, metric, domain, self.generator,
                                                      real_datasets=self.real_datasets)
                if y.empty or self.key not in user_x.index:
                    self.missing_rows.append(
                        f"No {metric} {domain} row: " + (f"no zoo model has a {real} result" if y.empty else
                                                         f"{self.key} has no {self.generator} {domain} result") + ".")
                    continue
                actual = _real_values(my_rows, metric, real)
                row = {"model": self.key, "metric": metric, "domain": domain, "generator": self.generator,
                       "real_dataset": real, "level": self.level, "synthetic": float(user_x[self.key]),
                       "actual": float(actual.iloc[0]) if len(actual) else np.nan}
                for name, generators in self._predictor_sets(zoo_rows, metric, domain):
                    zoo_x = pd.concat([self._values(zoo_rows, metric, domain, g) for g in generators], axis=1,
                                      join="inner")
                    zoo = zoo_x.join(y.rename("y"), how="inner")
                    if zoo.empty:
                        continue
                    user = pd.concat([self._values(my_rows, metric, domain, g) for g in generators], axis=1,
                                     join="inner")
                    x0 = user.loc[self.key].to_numpy() if self.key in user.index else np.zeros(0)
                    cell, loo = forecast_cell(zoo.iloc[:, :-1].to_numpy(), zoo["y"].to_numpy(), list(zoo.index),
                                              x0, self.level, metric_range(metric), names=list(generators))
                    loo_rows += [{"metric": metric, "domain": domain, "predictor": name, **r} for r in loo]
                    comparison.append({**row, "predictor": name, "predictor_sets": " + ".join(generators),
                                       "synthetic": x0[0] if len(x0) == 1 else np.nan, **cell})
                    if name == self.generator:
                        rows.append({**row, **cell})
        columns = ["model", "metric", "domain", "generator", "real_dataset", "n_models", "n_nonfinite", "level",
                   "synthetic", "predicted", "lo", "hi", "extrapolation", "clipped", "actual", "slope", "intercept",
                   "residual_sd", "pearson", "loo_mae", "loo_coverage", "loo_width", "note"]
        if not rows:
            raise DatasetError(f"no (domain, metric) cell has both zoo pairs and the model's synthetic value "
                               f"(metrics {self.metrics}, generator {self.generator!r}, domains "
                               f"{sorted(self.real_datasets)}); check the reference and the evaluated sets")
        self.comparison = _rank(pd.DataFrame(comparison).rename(columns={"synthetic": "x"}), self.generator)
        return pd.DataFrame(rows, columns=columns), pd.DataFrame(loo_rows)

    def _predictor_sets(self, table: pd.DataFrame, metric: str, domain: str) -> list[tuple[str, tuple[str, ...]]]:
        """(name, predictor generators) of the selected `predictors` that the reference has for this cell."""
        view = correlation.predictor_view(table)
        others = sorted(set(view["generator"]) - {correlation.REAL, self.generator, correlation.BASELINE,
                                                  *correlation.GENERATOR_ORDER})
        sets = {"synthetic": [(self.generator, (self.generator,))],
                "clean": [(CLEAN, (correlation.BASELINE,))],
                "corruptions": [(g, (g,)) for g in correlation.order_generators(others)],
                "synthetic+clean": [(f"{self.generator} + {CLEAN}", (self.generator, correlation.BASELINE))],
                "atc": [(ATC, ("atc",))] if metric in ATC_FORECASTS else []}
        return [item for kind in ["synthetic", *[k for k in self.predictors if k != "synthetic"]]
                for item in sets[kind]]

    def _values(self, results: pd.DataFrame, metric: str, domain: str, generator: str) -> pd.Series:
        """Per-model values of a predictor set (non-finite ones kept: forecast_cell names them)."""
        if generator == "atc":  # ATC's estimate of the pixel accuracy on the real set itself
            return _real_values(results, ATC_METRIC, self.real_datasets[domain]).rename(generator)
        return correlation.predictor_values(results, metric, domain, generator,
                                            real_datasets=self.real_datasets).rename(generator)

    # -- outputs -------------------------------------------------------------------------------------------

    def _write(self, forecasts, loo, table, mine, out: Path) -> list[dict]:
        index = []
        level = f"{100 * self.level:.0f}%"
        for frame, stem, title in (
                (forecasts, "forecast", f"Forecast of {self.key} (tidy, fractions)"),
                (self.comparison, "forecast_predictors", f"Forecast of {self.key} from every predictor, with its "
                                                         "leave-one-model-out error, coverage and width (tidy)"),
                (loo, "forecast_loo", "Leave-one-model-out forecasts of the zoo, every predictor (tidy)")):
            for suffix, write in ((".parquet", lambda f, p: f.to_parquet(p, index=False)),
                                  (".csv", lambda f, p: f.to_csv(p, index=False))):
                with atomic_path(out / f"{stem}{suffix}") as tmp:
                    write(frame, tmp)
            index.append({"kind": "data", "title": title, "csv": str(out / f"{stem}.csv"), "section": SECTION})
        layout = _shown(forecasts, level).rename(columns={"x": f"on {self.generator} (%)"}).drop(columns="predictor")
        if layout["measured real (%)"].isna().all():
            layout = layout.drop(columns="measured real (%)")
        if forecasts["note"].fillna("").astype(bool).any():
            layout["note"] = forecasts["note"].fillna("")
        paths = save_table(layout, out, "forecast_table", index=False, notes=self.missing_rows)
        index.append({"kind": "table", "section": SECTION, **paths,
                      "title": f"Forecast of {self.entry.display_name} on real data from its {self.generator} "
                               f"results: OLS over the reference zoo, {level} t prediction interval, leave-one-"
                               "model-out error and coverage of the zoo; bounded metrics clipped to [0, 100] %; "
                               "`extrapolation`: your model lies outside the zoo's range of synthetic values"})
        worse = self.comparison[self.comparison["verdict"].astype(bool)] if len(self.comparison) else []
        layout = _shown(self.comparison, level).rename(columns={"x": "your value on the predictor (%)"})
        layout.insert(layout.columns.get_loc("zoo LOO MAE (pts)") + 1, "best by LOO MAE",
                      np.where(self.comparison["best"], "best", ""))
        layout.insert(layout.columns.get_loc("best by LOO MAE") + 2, f"zoo LOO mean {level} interval width (pts)",
                      100 * self.comparison["loo_width"])
        if layout["measured real (%)"].isna().all():
            layout = layout.drop(columns="measured real (%)")
        if len(worse):
            layout["verdict"] = self.comparison["verdict"]
        paths = save_table(layout, out, "forecast_predictors_table", index=False)
        verdict = ("Synthetic is NOT better than clean Cityscapes val (LOO MAE) for: "
                   + ", ".join(f"{r.domain} {r.metric}" for r in worse.itertuples()) if len(worse)
                   else "synthetic beats clean Cityscapes val by LOO MAE wherever both were run")
        index.append({"kind": "table", "section": SECTION, **paths,
                      "title": f"Which predictor to trust: per domain and metric, every predictor's leave-one-model-"
                               f"out MAE, {level} coverage and interval width over the zoo (best by LOO MAE marked), "
                               f"and its forecast of {self.entry.display_name}. {verdict}"})
        for metric, cells in forecasts.dropna(subset=["predicted"]).groupby("metric", sort=False):
            paths = figures.forecast_scatter(table, cells, self.entry.display_name, self.real_datasets,
                                             out / f"forecast_{metric}")
            index.append({"kind": "figure", "section": SECTION, "files": paths,
                          "title": f"{metric}: zoo (dots), regression line and {level} prediction band, "
                                   f"{self.entry.display_name} (star: forecast with interval"
                                   + ("; cross: measured)" if forecasts["actual"].notna().any() else ")")})
        return index


def _real_values(results: pd.DataFrame, metric: str, real: str) -> pd.Series:
    """Per-model dataset-level values of `metric` on the real set `real` (non-finite ones kept)."""
    rows = results[(results["metric"] == metric) & (results["cls"] == "") & (results["dataset"] == real)]
    dupes = sorted(set(rows["model"][rows["model"].duplicated()]))
    if dupes:
        raise DatasetError(f"{metric} on {real}: several rows for model(s) {dupes}; each model needs one value per "
                           "set: restrict results_root")
    return rows.set_index("model")["value"].astype(float)


def _shown(frame: pd.DataFrame, level: str) -> pd.DataFrame:
    """A forecast or comparison frame as the report shows it: percentages, the interval as text, flags."""
    frame = frame.reindex(columns=[*frame.columns, *(c for c in ("predictor", "x", "synthetic") if c not in frame)])
    x = frame["x"].fillna(frame["synthetic"])
    shown = pd.DataFrame({
        "metric": frame["metric"], "domain": frame["domain"], "real_dataset": frame["real_dataset"],
        "predictor": frame["predictor"], "x": 100 * x, "forecast real (%)": 100 * frame["predicted"],
        f"{level} prediction interval": ["-" if np.isnan(a) else f"[{100 * a:.1f}, {100 * b:.1f}]"
                                         for a, b in zip(frame["lo"], frame["hi"], strict=True)],
        "extrapolation": np.where(frame["extrapolation"].fillna(False).astype(bool), "extrapolation", ""),
        "measured real (%)": 100 * frame["actual"], "zoo models": frame["n_models"], "zoo r": frame["pearson"],
        "zoo LOO MAE (pts)": 100 * frame["loo_mae"], f"zoo LOO coverage of {level} (%)": 100 * frame["loo_coverage"]})
    if not shown["extrapolation"].astype(bool).any():
        shown = shown.drop(columns="extrapolation")
    if frame["note"].fillna("").astype(bool).any():
        shown["note"] = frame["note"].fillna("")
    return shown


def _rank(comparison: pd.DataFrame, synthetic: str) -> pd.DataFrame:
    """Mark each cell's best predictor by LOO MAE (`best`), and say in `verdict` where synthetic is not better
    than clean Cityscapes val."""
    comparison = comparison.reindex(columns=[*comparison.columns, *(
        c for c in ("loo_mae", "loo_coverage", "loo_width", "pearson") if c not in comparison)])
    comparison = comparison.assign(best=False, verdict="")
    for _, cell in comparison.groupby(["metric", "domain"], sort=False):
        mae = cell["loo_mae"].dropna()
        if len(mae):
            comparison.loc[mae.idxmin(), "best"] = True
        by_name = cell.set_index("predictor")["loo_mae"]
        if {synthetic, CLEAN} <= set(by_name.index) and not by_name[[synthetic, CLEAN]].isna().any() \
                and by_name[synthetic] >= by_name[CLEAN]:
            comparison.loc[cell.index[cell["predictor"] == synthetic], "verdict"] = (
                f"synthetic is not better than clean Cityscapes val here (LOO MAE {100 * by_name[synthetic]:.2f} "
                f"vs {100 * by_name[CLEAN]:.2f} pts)")
    return comparison
