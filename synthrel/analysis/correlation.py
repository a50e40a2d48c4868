"""Correlation over the model zoo between a metric on a predictor set and the same metric on real data.

One point per model: x = the metric on a synthetic set (or the Cityscapes baseline, a corruption, a user
set), y = the same metric on the real counterpart of the shift (ACDC condition or IDD). Pearson r is the
headline (paper S8 / section 3.5); Spearman and Kendall come with it, all three with seeded percentile
bootstrap intervals over models.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from synthrel.config import real_counterparts
from synthrel.conventions import CLASS_NAMES
from synthrel.errors import DatasetError
from synthrel.reporting import MISSING, format_cell

log = logging.getLogger(__name__)

METHODS = ("pearson", "spearman", "kendall")
SHIFT_DOMAINS = ("fog", "night", "rain", "snow", "india")
#: shift domain -> its real set, as synthrel/conf/domain/<domain>.yaml declares it (stages read it from their config)
REAL_DATASETS = real_counterparts()
BASELINE = "cityscapes"
#: Results of the Cityscapes row: all of val (real_split=all) or its relis test split (frankfurt, the default).
BASELINE_DATASETS = (BASELINE, f"{BASELINE}_test")
REAL = "real"
GENERATOR_ORDER = ("sd15", "sdxl", BASELINE)
# Fewest distinct (x, y) points a correlation is reported from: through two points Pearson r is always ±1 (a
# class that one model segments and the others score 0 on gave r = 1.00).
MIN_INFORMATIVE = 3


def pearson_along(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis (vectorised over bootstrap resamples); NaN for constant inputs."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    denom = np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=-1) / denom
    return np.where(denom > 0, np.clip(r, -1.0, 1.0), np.nan)


def spearman_along(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho = Pearson r of average ranks (ties share their mean rank, as scipy.stats.spearmanr)."""
    return pearson_along(stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1))


def kendall_along(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall tau-b along the last axis: sum of concordance signs over sqrt(untied pairs in x * in y)."""
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    denom = np.sqrt(np.abs(sx).sum(axis=(-2, -1)) * np.abs(sy).sum(axis=(-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (sx * sy).sum(axis=(-2, -1)) / denom
    return np.where(denom > 0, tau, np.nan)


STATISTICS = {"pearson": pearson_along, "spearman": spearman_along, "kendall": kendall_along}
SCIPY_TESTS = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}


@dataclass(frozen=True)
class Bootstrap:
    """Percentile bootstrap over models: the same resampled model indices feed all three coefficients.

    Indices are drawn as scipy.stats.bootstrap(paired=True) draws them (one `integers(0, n, (B, n))` call on
    `default_rng(seed)`), so without degenerate resamples the interval equals scipy's percentile interval.
    Resamples with fewer than MIN_INFORMATIVE distinct (x, y) points have no meaningful correlation and are
    dropped (the kept ones are counted in `n_valid_resamples`).
    """

    n_resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if self.n_resamples < 0:
            raise ValueError(f"bootstrap.n_resamples must be >= 0, got {self.n_resamples}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"bootstrap.confidence must be in (0, 1), got {self.confidence}")


def correlate(x, y, bootstrap: Bootstrap = Bootstrap()) -> dict:
    """Pearson, Spearman and Kendall (statistic, p-value, bootstrap interval) of paired per-model values."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    # Models with the same (x, y) count once: only distinct points inform a correlation.
    point = np.unique(np.stack([x, y], axis=1), axis=0, return_inverse=True)[1].ravel() if n else np.zeros(0, int)
    informative = int(point.max()) + 1 if n else 0
    out: dict = {"n_models": n, "n_informative": informative, "seed": bootstrap.seed,
                 "n_resamples": bootstrap.n_resamples, "confidence": bootstrap.confidence}
    enough = informative >= MIN_INFORMATIVE and np.ptp(x) > 0 and np.ptp(y) > 0
    for method, test in SCIPY_TESTS.items():
        if enough:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", stats.ConstantInputWarning)
                res = test(x, y)
            out[method], out[f"{method}_p"] = float(res.statistic), float(res.pvalue)
        else:
            out[method] = out[f"{method}_p"] = np.nan
    valid = np.zeros(0, dtype=bool)
    boots = {}
    if enough and bootstrap.n_resamples:
        idx = np.random.default_rng(bootstrap.seed).integers(0, n, (bootstrap.n_resamples, n))
        for method, statistic in STATISTICS.items():
            boots[method] = statistic(x[idx], y[idx])
        drawn = np.sort(point[idx], axis=1)
        distinct = 1 + (np.diff(drawn, axis=1) != 0).sum(axis=1)
        valid = ~np.isnan(boots["pearson"]) & (distinct >= MIN_INFORMATIVE)
    alpha = (1 - bootstrap.confidence) / 2
    for method in METHODS:
        if valid.any():
            lo, hi = np.quantile(boots[method][valid], [alpha, 1 - alpha])
        else:
            lo = hi = np.nan
        out[f"{method}_lo"], out[f"{method}_hi"] = float(lo), float(hi)
    out["n_valid_resamples"] = int(valid.sum())
    return out


def predictor_view(results: pd.DataFrame) -> pd.DataFrame:
    """Results with the Cityscapes rows (BASELINE_DATASETS) labelled as the in-domain baseline predictor
    (generator 'cityscapes'); a table must hold one of them (CorrelateJob keeps the one `real_split` reports)."""
    view = results.copy()
    view.loc[view["dataset"].isin(BASELINE_DATASETS), "generator"] = BASELINE
    return view


def order_generators(names) -> list[str]:
    """Table 1 row order: SD1.5, SDXL, the Cityscapes baseline, corruptions, then user sets."""
    names = set(names) - {REAL}
    known = [g for g in GENERATOR_ORDER if g in names]
    corruptions = sorted(g for g in names if g.startswith("corruption:"))
    return known + corruptions + sorted(names - set(known) - set(corruptions))


def order_domains(names, preferred: Sequence[str] = SHIFT_DOMAINS) -> list[str]:
    names = list(dict.fromkeys(names))
    return [d for d in preferred if d in names] + sorted(d for d in names if d not in preferred)


def _one_per_model(rows: pd.DataFrame, what: str) -> pd.Series:
    dupes = rows["model"][rows["model"].duplicated()]
    if len(dupes):
        sources = sorted(set(rows.loc[rows["model"].isin(dupes), "source"])) if "source" in rows else []
        raise DatasetError(
            f"{what}: several rows for model(s) {sorted(set(dupes))} (from {sources}); "
            "each model needs one value per set: restrict results_root or the generators"
        )
    return rows.set_index("model")["value"].astype(float)


def paired_values(
    results: pd.DataFrame,
    metric: str,
    domain: str,
    generator: str,
    cls: str = "",
    real_datasets: Mapping[str, str] = REAL_DATASETS,
) -> pd.DataFrame:
    """Per-model x (predictor set) and y (real counterpart) for one cell; models missing either are dropped.

    Predictor rows are those of `generator` with this `domain`; a generator without rows for any shift domain
    (the Cityscapes baseline, a domain-agnostic corruption) predicts every domain with the same rows.
    """
    view = predictor_view(results)
    return _pairs(view[(view["metric"] == metric) & (view["cls"] == cls)], domain, generator, real_datasets)


def predictor_values(
    results: pd.DataFrame,
    metric: str,
    domain: str,
    generator: str,
    cls: str = "",
    real_datasets: Mapping[str, str] = REAL_DATASETS,
) -> pd.Series:
    """Per-model x of one cell (the predictor set's value), whether or not the model has the real value."""
    view = predictor_view(results)
    cell = view[(view["metric"] == metric) & (view["cls"] == cls)]
    return _one_per_model(_predictor_rows(cell, domain, generator, real_datasets),
                          f"{metric}/{cls} {generator}->{domain} (predictor)")


def _predictor_rows(cell: pd.DataFrame, domain: str, generator: str, real_datasets: Mapping[str, str]):
    """Rows of `generator` that predict `domain`: those of the domain, else the domain-agnostic ones."""
    if domain not in real_datasets:
        raise DatasetError(f"no real counterpart for domain {domain!r} (config key `real_datasets`: "
                           f"{dict(real_datasets)})")
    candidates = cell[(cell["generator"] == generator) & (cell["dataset"] != real_datasets[domain])]
    predictor = candidates[candidates["domain"] == domain]
    if predictor.empty:
        predictor = candidates[~candidates["domain"].isin(list(real_datasets))]
    return predictor


def _pairs(cell: pd.DataFrame, domain: str, generator: str, real_datasets: Mapping[str, str]) -> pd.DataFrame:
    """paired_values on the rows of one (metric, cls), already in predictor view."""
    predictor = _predictor_rows(cell, domain, generator, real_datasets)
    real = cell[cell["dataset"] == real_datasets[domain]]
    what = f"{cell['metric'].iloc[0] if len(cell) else '?'}/{cell['cls'].iloc[0] if len(cell) else ''} " \
           f"{generator}->{domain}"
    x = _one_per_model(predictor, f"{what} (predictor)")
    y = _one_per_model(real, f"{what} (real {real_datasets[domain]})")
    pairs = pd.DataFrame({"x": x, "y": y}).dropna()
    pairs.index.name = "model"
    return pairs.reset_index()


def correlation_table(
    results: pd.DataFrame,
    metrics: Sequence[str],
    domains: Sequence[str] = SHIFT_DOMAINS,
    generators: Sequence[str] | None = None,
    per_class: bool = False,
    real_datasets: Mapping[str, str] = REAL_DATASETS,
    bootstrap: Bootstrap = Bootstrap(),
    notes: list[str] | None = None,
) -> pd.DataFrame:
    """Tidy table: one row per (metric, cls, generator, domain) with the three coefficients and intervals.

    With `per_class`, `metrics` are per-class metrics (cls = class name, e.g. IoU) and every class present
    is correlated separately (Table 5); otherwise the dataset-level rows (cls == "") are used (Table 1).

    No row is dropped silently: a generator with results for a domain keeps its row, with NaN coefficients
    (n/a in the tables) when fewer than MIN_INFORMATIVE models have both its value and the real one; a warning
    (logged, and appended to `notes`) names the models missing on either side, and a domain whose real set has
    no results at all.
    """
    warned: set[tuple] = set()

    def warn(key: tuple, message: str) -> None:
        if key not in warned:
            warned.add(key)
            log.warning("%s", message)
            if notes is not None:
                notes.append(message)

    view = predictor_view(results)
    if generators is None:
        generators = order_generators(view["generator"].unique())
    rows = []
    for metric in metrics:
        sub = view[view["metric"] == metric]
        if sub.empty:
            log.warning("metric %r is not in the results; skipped", metric)
            continue
        if per_class:
            present = set(sub.loc[sub["cls"] != "", "cls"])
            classes = [c for c in CLASS_NAMES if c in present] + sorted(present - set(CLASS_NAMES))
        else:
            classes = [""]
        for cls in classes:
            cell = sub[sub["cls"] == cls]
            for generator in generators:
                for domain in domains:
                    predictor = _predictor_rows(cell, domain, generator, real_datasets)
                    if predictor.empty:
                        continue  # this generator made nothing for this domain: no row to show
                    real_name = real_datasets[domain]
                    real_models = set(cell.loc[cell["dataset"] == real_name, "model"])
                    if not real_models:
                        warn((metric, domain, "real"), f"correlation: no {metric} result on the real set "
                             f"{real_name!r}, so the {domain!r} column is left out (evaluate the zoo on it)")
                        continue
                    pairs = _pairs(cell, domain, generator, real_datasets)
                    _warn_unmatched(warn, metric, cls, generator, domain, real_name, predictor, real_models,
                                    cell[cell["dataset"] == real_name], len(pairs))
                    stats_row = correlate(pairs["x"], pairs["y"], bootstrap)
                    rows.append({"metric": metric, "cls": cls, "generator": generator, "domain": domain,
                                 "real_dataset": real_datasets[domain], **stats_row})
    return pd.DataFrame(rows)


def _warn_unmatched(warn, metric: str, cls: str, generator: str, domain: str, real_name: str,
                    predictor_rows: pd.DataFrame, real: set, real_rows: pd.DataFrame, n_pairs: int) -> None:
    """Name the models one side lacks; say when the cell is n/a for want of models with a value on both sides,
    and why: models evaluated on one side only, or (per-class cells) a class without a value (NaN: absent from
    the labels and the predictions of a set) although every model was evaluated on both."""
    predictor = set(predictor_rows["model"])
    only_predictor, only_real = sorted(predictor - real), sorted(real - predictor)
    if not only_predictor and not only_real and n_pairs >= MIN_INFORMATIVE:
        return
    def some(names):
        return ", ".join(names[:10]) + (f" (+{len(names) - 10} more)" if len(names) > 10 else "")
    what = f"{metric}[{cls}]" if cls else metric
    if not only_predictor and not only_real:  # every model on both sides: the values are missing
        both = predictor & real
        undefined = {side: sorted(set(rows.loc[rows["model"].isin(both) & rows["value"].isna(), "model"]))
                     for side, rows in ((generator, predictor_rows), (real_name, real_rows))}
        head = (f"correlation {what} {generator}->{domain}: {n_pairs} model(s) with a value on both sides, fewer "
                f"than {MIN_INFORMATIVE}, shown as {MISSING}: ")
        if not any(undefined.values()):
            warn((metric, cls, generator, domain), head + f"the zoo has only {len(both)} model(s) evaluated on both")
            return
        counts = ", ".join(f"{len(models)} of {len(both)} on {side!r}" for side, models in undefined.items())
        warn((metric, cls, generator, domain), head + f"every model was evaluated on both sets, but {metric} is "
             f"undefined (the class has no pixel in the labels nor in the predictions, or the set has no such "
             f"class) for {counts}" if cls else head + f"every model was evaluated on both sets, but {metric} is "
             f"undefined for {counts}")
        return
    parts = [f"correlation {what} {generator}->{domain}: {n_pairs} model(s) in common with the real results "
             f"on {real_name!r}"]
    if n_pairs < MIN_INFORMATIVE:
        parts.append(f"fewer than {MIN_INFORMATIVE}, shown as {MISSING}")
    if only_predictor:
        parts.append(f"without a real result: {some(only_predictor)}")
    if only_real:
        parts.append(f"without a {generator} result: {some(only_real)}")
    warn((metric, cls, generator, domain), "; ".join(parts) + " (check that both were evaluated with the same zoo)")


def shift_layout(tidy: pd.DataFrame, metric: str, value: str = "pearson", cls: str = "") -> pd.DataFrame:
    """Table 1 layout: rows = generators (paper order), columns = shifts."""
    sub = tidy[(tidy["metric"] == metric) & (tidy["cls"] == cls)]
    table = sub.pivot(index="generator", columns="domain", values=value)
    table = table.reindex(index=order_generators(table.index), columns=order_domains(table.columns))
    table.columns.name = None
    return table


#: Table 2's OOD sets (domain labels of stages.evaluate.dataset_labels): the curated items and every accepted one.
OOD_SETS = {"ood_objects_curated": "curated", "ood_objects": "automatic (all accepted)"}


def ood_layout(tidy: pd.DataFrame, generator: str, value: str = "pearson") -> pd.DataFrame:
    """Table 2 PCC layout: rows = '<metric> (<convention>)' of the OOD metrics (rba_pooled, genval_per_image),
    columns = the OOD-object sets present (curated, automatic); the real OOD set is the domain's real_datasets."""
    from synthrel.metrics.ood import describe_row

    sub = tidy[(tidy["generator"] == generator) & tidy["domain"].isin(list(OOD_SETS)) & (tidy["cls"] == "")]
    rows = []
    for (metric, domain), cell in sub.groupby(["metric", "domain"], sort=False):
        described = describe_row(metric)
        if described is None or described[1] is None:
            continue
        convention, score = described
        rows.append({"convention": convention, "score": score, "metric": metric, "set": OOD_SETS[domain],
                     "value": float(cell[value].iloc[0])})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).sort_values(["convention", "score", "metric"], kind="stable")
    frame["row"] = frame["metric"] + " (" + frame["convention"] + ")"
    table = frame.pivot(index="row", columns="set", values="value")
    table = table.reindex(index=list(dict.fromkeys(frame["row"])),
                          columns=[c for c in OOD_SETS.values() if c in table.columns])
    table.index.name, table.columns.name = "metric (convention)", None
    return table


def class_layout(tidy: pd.DataFrame, metric: str, generator: str, value: str = "pearson") -> pd.DataFrame:
    """Table 5 layout: rows = the 19 Cityscapes classes (trainId order), columns = shifts."""
    sub = tidy[(tidy["metric"] == metric) & (tidy["generator"] == generator) & (tidy["cls"] != "")]
    table = sub.pivot(index="cls", columns="domain", values=value)
    extra = sorted(set(table.index) - set(CLASS_NAMES))
    table = table.reindex(index=list(CLASS_NAMES) + extra, columns=order_domains(table.columns))
    table.index.name = "class"
    table.columns.name = None
    return table


def with_intervals(tidy: pd.DataFrame, layout, method: str = "pearson", **kwargs) -> pd.DataFrame:
    """A layout whose cells read 'r [lo, hi]' (the bootstrap interval beside the point estimate)."""
    point = layout(tidy, value=method, **kwargs)
    lo = layout(tidy, value=f"{method}_lo", **kwargs)
    hi = layout(tidy, value=f"{method}_hi", **kwargs)
    cells = np.vectorize(lambda r, a, b: MISSING if np.isnan(r) else
                         f"{r:.2f} [{format_cell(float(a))}, {format_cell(float(b))}]", otypes=[str])
    return pd.DataFrame(cells(point.to_numpy(), lo.to_numpy(), hi.to_numpy()), index=point.index,
                        columns=point.columns)
