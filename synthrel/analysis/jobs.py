"""The correlate stage: results tables in, Table 1/3/5-style tables and Fig. 3/6/14-style figures out."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from synthrel.analysis import aggregate, calibration, correlation, figures
from synthrel.analysis.ablation import ablation_for
from synthrel.analysis.provenance import provenance
from synthrel.errors import ConfigError, DatasetError
from synthrel.evaluation import NOT_EVALUATED
from synthrel.jobs import (
    atomic_path,
    exclusive_output,
    positive_int,
    read_json_artifact,
    staged_outputs,
    write_json_atomic,
)
from synthrel.metrics.calibration import CALIBRATION_ECE, ECE_DEFINITIONS
from synthrel.reporting import save_table
from synthrel.tracking import Tracker

log = logging.getLogger(__name__)

OUTPUTS_INDEX = "outputs.json"
SETTINGS_FILE = "settings.json"


@dataclass
class BootstrapSettings:
    """`stages.correlate.bootstrap` (its seed is the stage's)."""

    n_resamples: int = 2000
    confidence: float = 0.95


@dataclass
class AblationSettings:
    """`stages.correlate.ablation`: subset sizes of the data-size ablation ([]: none), repeats, generators."""

    sizes: list[int] = field(default_factory=list)
    repeats: int = 10
    generators: list[str] = field(default_factory=lambda: ["sd15"])


@dataclass
class CorrelateJob:
    """Correlate each model's metric on synthetic/baseline sets with the same metric on real shifted data.

    Inputs: `results_root` (one or more roots holding metrics.parquet per (model, dataset) job) and/or
    `sweep_dirs` (Hydra multirun folders), plus an optional `calibration_root`. Everything is recomputed on
    each run (the analysis takes seconds) and written atomically under `output_dir`.
    """

    output_dir: str
    results_root: str | list[str] | None = None
    sweep_dirs: list[str] = field(default_factory=list)
    calibration_root: str | None = None
    metrics: list[str] = field(default_factory=lambda: ["mIoU", "ece_paper"])
    class_metrics: list[str] = field(default_factory=lambda: ["IoU"])
    domains: list[str] = field(default_factory=lambda: list(correlation.SHIFT_DOMAINS))
    real_datasets: dict[str, str] = field(default_factory=lambda: dict(correlation.REAL_DATASETS))
    baseline_dataset: str = correlation.BASELINE   # the Cityscapes row's set (one of correlation.BASELINE_DATASETS)
    generators: list[str] | None = None
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    ablation: AblationSettings = field(default_factory=AblationSettings)
    seed: int = 0
    logger: dict = field(default_factory=dict)
    profile: str = "paper"
    run_dir: str | None = None

    def __post_init__(self):
        if not self.results_root and not self.sweep_dirs:
            raise ConfigError("stages.correlate needs `results_root` or `sweep_dirs` (Hydra multirun folders)")
        if self.baseline_dataset not in correlation.BASELINE_DATASETS:
            raise ConfigError(f"stages.correlate.baseline_dataset is {self.baseline_dataset!r}; expected one of "
                              f"{list(correlation.BASELINE_DATASETS)}")
        unknown = [d for d in self.domains if d not in self.real_datasets]
        if unknown:
            raise ConfigError(f"stages.correlate.domains {unknown} have no entry in `real_datasets` "
                              f"({sorted(self.real_datasets)}); add e.g. real_datasets.{unknown[0]}=<dataset>")
        if isinstance(self.bootstrap, dict):  # from the config (its keys checked by synthrel.schemas)
            self.bootstrap = BootstrapSettings(**self.bootstrap)
        if isinstance(self.ablation, dict):
            self.ablation = AblationSettings(**self.ablation)
        self._bootstrap = correlation.Bootstrap(seed=self.seed, **dataclasses.asdict(self.bootstrap))
        for size in self.ablation.sizes:
            positive_int(size, "stages.correlate.ablation.sizes[]")
        positive_int(self.ablation.repeats, "stages.correlate.ablation.repeats")

    def load(self) -> pd.DataFrame:
        self._notes: list[str] = []  # warnings of the analysis (models missing on one side...), kept in settings
        tables = []
        if self.results_root:
            tables.append(aggregate.load_results(self.results_root))
        if self.sweep_dirs:
            tables.append(aggregate.collect_sweep(self.sweep_dirs))
        aggregate.check_consistent(tables)
        results = pd.concat(tables, ignore_index=True).drop_duplicates(
            subset=["source", "model", "dataset", "generator", "domain", "metric", "cls"]
        )
        profiles = sorted(set(results["profile"].astype(str)))
        if profiles != [self.profile]:
            raise ConfigError(f"results were made with profile {profiles} but this run has profile="
                              f"{self.profile!r}; run the analysis with profile={profiles[0]}")
        other = results["dataset"].isin(set(correlation.BASELINE_DATASETS) - {self.baseline_dataset})
        if other.any():
            self._notes.append(f"Cityscapes results of {sorted(set(results.loc[other, 'dataset']))} left out: the "
                               f"Cityscapes row is {self.baseline_dataset} (stages.correlate.baseline_dataset)")
            log.warning("%s", self._notes[-1])
        return results[~other]

    def run(self) -> dict:
        with exclusive_output(self.output_dir):
            return self._run()

    def _run(self) -> dict:
        results = self.load()
        # every table, figure and the index are written into a staging folder and published together: an error in
        # any section leaves the outputs of the last successful run as they were
        with staged_outputs(self.output_dir, last=(OUTPUTS_INDEX,)) as stage:
            return self._write(results, stage)

    def _write(self, results: pd.DataFrame, out: Path) -> dict:
        index: list[dict] = []
        with Tracker.from_config(self.logger, job_type="correlate") as tracker:
            tracker.log_hyperparams({"seed": self.seed, "profile": self.profile, **self._bootstrap.__dict__})
            self._save_frame(results, out / "results", index, "Results (all models and sets)", tracker=None)
            self._shift_tables(results, out, index, tracker)
            self._class_tables(results, out, index, tracker)
            self._calibration(results, out, index, tracker)
            self._ablation(results, out, index, tracker)
        settings = {"job": {k: v for k, v in dataclasses.asdict(self).items() if k != "logger"},
                    "bootstrap": {**self._bootstrap.__dict__, "method": "percentile", "resampled": "models"},
                    "profile": self.profile, "n_models": int(results["model"].nunique()),
                    "sources": sorted(set(results["source"])), "not_evaluated": self._not_evaluated(),
                    "warnings": self._notes,
                    **provenance(self.run_dir)}
        write_json_atomic(out / SETTINGS_FILE, settings)
        # the index names the files where they are published
        index = json.loads(json.dumps(index).replace(json.dumps(str(out))[1:-1], json.dumps(self.output_dir)[1:-1]))
        write_json_atomic(out / OUTPUTS_INDEX, index)
        log.info("correlate: %d tables/figures in %s", len(index), self.output_dir)
        return {"analysis_dir": str(self.output_dir), "n_models": settings["n_models"], "n_outputs": len(index)}

    def _not_evaluated(self) -> dict[str, str]:
        """Zoo models the evaluate stage left out (no weights), with the reason, from each results root."""
        roots = [self.results_root] if isinstance(self.results_root, str) else list(self.results_root or [])
        records = [read_json_artifact(p, "a record of a zoo model left out by the evaluate stage", "Run the "
                                      "evaluate stage again (it rewrites these records)", keys=("model", "reason"))
                   for root in roots for p in sorted((Path(root) / NOT_EVALUATED).glob("*.json"))]
        return {r["model"]: r["reason"] for r in records}

    # -- sections -------------------------------------------------------------------------------------

    def _shift_tables(self, results, out, index, tracker) -> None:
        tidy = correlation.correlation_table(results, self.metrics, self.domains, self.generators,
                                             real_datasets=self.real_datasets, bootstrap=self._bootstrap,
                                             notes=self._notes)
        if tidy.empty:
            log.warning("no (predictor, real) pairs found for metrics %s in domains %s", self.metrics, self.domains)
            return
        self._save_frame(tidy, out / "correlations", index, "All correlations (tidy)", tracker)
        self._ood_tables(tidy, out, index, tracker)
        for metric in tidy["metric"].unique():
            title = f"Table 1 layout: Pearson r of per-model {_defined(metric)}, predictor set vs real shifted data"
            self._save_layout(correlation.shift_layout(tidy, metric), out, f"table1_{metric}", title, index, tracker)
            self._save_layout(correlation.with_intervals(tidy, correlation.shift_layout, metric=metric), out,
                              f"table1_{metric}_ci", f"{title}, with {self._ci_text()}", index, tracker)
            for _, row in tidy[tidy["metric"] == metric].iterrows():
                prefix = f"correlate/{metric}/{row['generator']}/{row['domain']}"
                tracker.log_metrics({f"{prefix}/{m}": row[m] for m in correlation.METHODS})
            for generator in tidy.loc[tidy["metric"] == metric, "generator"].unique():
                domains = list(tidy.loc[(tidy["metric"] == metric) & (tidy["generator"] == generator), "domain"])
                stem = out / f"fig3_{metric}_{_slug(generator)}"
                paths = figures.scatter_synthetic_vs_real(results, metric, generator, domains, stem,
                                                          self.real_datasets)
                self._add_figure(paths, f"Fig. 3 style: {metric} on {generator} vs real, per domain", index, tracker)

    def _ood_tables(self, tidy, out, index, tracker) -> None:
        """Table 2's PCC: the curated and the automatic OOD-object sets, in both OOD conventions."""
        for generator in tidy["generator"].unique():
            layout = correlation.ood_layout(tidy, generator)
            if layout.empty:
                continue
            reals = sorted({self.real_datasets[d] for d in correlation.OOD_SETS if d in self.real_datasets})
            title = (f"Table 2: Pearson r over the zoo between each OOD metric on the {generator} OOD-object set and "
                     f"on {', '.join(reals)}; columns: curated items (ood_objects_curated) and every accepted "
                     "item (automatic, ood_objects); conventions: rba_pooled = pooled over the set's pixels (RbA), "
                     "genval_per_image = mean of per-image metrics (GenVal, img_ rows)")
            self._save_layout(layout, out, f"table2_pcc_{_slug(generator)}", title, index, tracker)

    def _class_tables(self, results, out, index, tracker) -> None:
        if not self.class_metrics:
            return
        tidy = correlation.correlation_table(results, self.class_metrics, self.domains, self.generators,
                                             per_class=True, real_datasets=self.real_datasets,
                                             bootstrap=self._bootstrap, notes=self._notes)
        if tidy.empty:
            return
        self._save_frame(tidy, out / "class_correlations", index, "Per-class correlations (tidy)", tracker)
        for (metric, generator), _ in tidy.groupby(["metric", "generator"], sort=False):
            layout = correlation.class_layout(tidy, metric, generator)
            stem = f"table5_{metric}_{_slug(generator)}"
            title = f"Table 5 layout: per-class Pearson r of {metric}, {generator} vs real"
            self._save_layout(layout, out, stem, title, index, tracker)
            paths = figures.class_heatmap(layout, f"Per-class PCC ({metric}, {generator})", out / f"{stem}_heatmap")
            self._add_figure(paths, f"{title} (heat map)", index, tracker)

    def _calibration(self, results, out, index, tracker) -> None:
        if not self.calibration_root:
            return
        if not Path(self.calibration_root).exists():
            log.warning("calibration_root %s does not exist (calibrate stage not run); skipping Table 3 / Fig. 6",
                        self.calibration_root)
            return
        calib = aggregate.load_results(self.calibration_root, aggregate.CALIBRATION_FILENAMES,
                                       calibration.CALIBRATION_COLUMNS)
        aggregate.check_consistent([results.head(1), calib])
        # the same fit recorded by several calibrate tasks (their folders under one root) counts once
        calib = calib.drop_duplicates(subset=[c for c in calib.columns if c != "source"])
        summary = calibration.calibration_success(calib)
        self._save_frame(summary, out / "calibration_summary", index, "Calibration success (tidy)", tracker)
        self._save_layout(calibration.success_layout(summary), out, "table3_calibration_success",
                          f"Table 3 layout: % of models whose ECE improves with TS ({CALIBRATION_ECE})", index,
                          tracker)
        self._save_layout(calibration.success_layout(summary, "mean_rel_improvement"), out,
                          "calibration_mean_rel_improvement",
                          f"Mean relative ECE improvement (%) ({CALIBRATION_ECE})", index, tracker)
        real = results[(results["metric"] == "mIoU") & (results["cls"] == "")]
        robustness = {d: real[real["dataset"] == ds].set_index("model")["value"].to_dict()
                      for d, ds in self.real_datasets.items()}
        domains = correlation.order_domains(calib["domain"].unique(), self.domains)
        paths = figures.ece_improvement_bars(calib, robustness, domains, out / "fig6_ece_improvement")
        self._add_figure(paths, "Fig. 6 / Fig. 14 style: relative ECE improvement per model, ordered by real mIoU "
                         f"({CALIBRATION_ECE})", index, tracker)

    def _ablation(self, results, out, index, tracker) -> None:
        sizes = self.ablation.sizes
        if not sizes:
            return
        tables = []
        for generator in self.ablation.generators:
            for domain in self.domains:
                try:
                    tables.append(ablation_for(results, generator, domain, sizes, self.ablation.repeats,
                                               self.seed, self.real_datasets, notes=self._notes))
                except DatasetError as err:
                    log.warning("data-size ablation skipped for %s/%s: %s", generator, domain, err)
                    self._notes.append(f"data-size ablation {generator}->{domain}: not run: {err}")
        tables = [t for t in tables if not t.empty]
        if not tables:
            return
        table = pd.concat(tables, ignore_index=True)
        self._save_frame(table, out / "ablation_data_size", index, "Data-size ablation (every repeat)", tracker)
        paths = figures.ablation_plot(table, out / "fig_ablation_data_size")
        self._add_figure(paths, "PCC vs number of synthetic images (mean ± std over repeats)", index, tracker)

    # -- writing helpers ------------------------------------------------------------------------------

    def _ci_text(self) -> str:
        b = self._bootstrap
        return f"{100 * b.confidence:.0f}% percentile bootstrap intervals over models ({b.n_resamples} resamples, " \
               f"seed {b.seed})"

    def _save_frame(self, frame, stem: Path, index, title, tracker) -> None:
        with atomic_path(stem.with_suffix(".parquet")) as tmp:
            frame.to_parquet(tmp, index=False)
        with atomic_path(stem.with_suffix(".csv")) as tmp:
            frame.to_csv(tmp, index=False)
        index.append({"kind": "data", "title": title, "csv": str(stem.with_suffix(".csv"))})
        if tracker is not None:
            tracker.log_table(f"correlate/{stem.name}", frame)

    def _save_layout(self, table, out, stem, title, index, tracker) -> None:
        paths = save_table(table, out, stem, caption=title)
        index.append({"kind": "table", "title": title, **paths})
        tracker.log_table(f"correlate/{stem}", table)

    def _add_figure(self, paths, title, index, tracker) -> None:
        index.append({"kind": "figure", "title": title, "files": paths})
        tracker.log_figure(f"correlate/{Path(paths[0]).stem}", paths[0])


def _defined(metric: str) -> str:
    """The metric's name with its definition where the name alone is ambiguous (the two ECEs)."""
    return f"{metric} ({ECE_DEFINITIONS[metric]})" if metric in ECE_DEFINITIONS else metric


def _slug(name: str) -> str:
    return name.replace(":", "-").replace("/", "-").replace(" ", "_")
