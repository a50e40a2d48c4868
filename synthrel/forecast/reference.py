"""The reference results table: a zoo's results as one shareable, versioned file pair.

`reference.parquet` holds the evaluate stage's long table (one row per model, dataset, metric, class) of every
model of the zoo on synthetic and real sets, with the ATC estimates of the real sets (`atc_acc`,
synthrel.forecast.atc) that the forecast's predictor comparison needs; `reference.json` beside it says what made it: models with their
checkpoints, configs and weight fingerprints, datasets with domain, generator, split and image count, the
profile, the synthrel version and git SHA, and the table's sha256. Someone without real datasets forecasts
from a table that someone else published (`stages.forecast.reference=<path>/reference.parquet`).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

import synthrel
from synthrel.analysis.aggregate import RESULT_COLUMNS, load_results
from synthrel.analysis.provenance import git_sha, package_versions
from synthrel.errors import DatasetError
from synthrel.evaluation.results import DONE, read_done
from synthrel.forecast.atc import atc_rows
from synthrel.jobs import atomic_path, read_json_artifact, read_parquet_artifact, write_json_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TABLE_FILE = "reference.parquet"
PROVENANCE_FILE = "reference.json"


def build_reference(results_root: str | Path, dataset_configs: dict | None = None,
                    dataset_labels: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """The zoo's results under `results_root` and their provenance (dataset splits from the dataset configs)."""
    root = Path(results_root)
    table = load_results(root)
    table = pd.concat([table, atc_rows(root)], ignore_index=True) if len(table) else table  # ATC's predictor
    models = {}
    for marker in sorted(root.rglob(DONE)):
        record = read_done(marker.parent)
        key = record.get("job", "").split("/")[0] or marker.parent.parent.name
        models.setdefault(key, {k: record.get(k) for k in ("checkpoint", "config", "weights", "precision")})
    families = table.groupby("model")["family"].first().to_dict()
    for key in families:
        models.setdefault(key, {})["family"] = families[key]
    table = table[list(RESULT_COLUMNS)]
    provenance = {
        "zoo": root.name,
        "models": {k: models[k] for k in sorted(families)},
        "datasets": _datasets(table, dataset_configs or {}, dataset_labels or {}),
    }
    return table, provenance


def _datasets(table: pd.DataFrame, configs: dict, labels: dict) -> dict:
    """Per dataset key: domain, generator, images, and split / root from its dataset config when known."""
    config_of = {name: name for name in configs}
    config_of.update({(lab or {}).get("key", name): name for name, lab in labels.items() if name in configs})
    out = {}
    rows = table.drop_duplicates("dataset").set_index("dataset")
    for key, row in rows.iterrows():
        config = configs.get(config_of.get(key), {}) or {}
        out[key] = {"domain": row["domain"], "generator": row["generator"], "n_images": int(row["n_images"]),
                    "split": config.get("split"), "root": config.get("root")}
    return out


def write_reference(table: pd.DataFrame, provenance: dict, out_dir: str | Path) -> Path:
    """Write reference.parquet, then reference.json (with the table's sha256); return the table's path."""
    out = Path(out_dir)
    path = out / TABLE_FILE
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    profiles = sorted(set(table["profile"].astype(str)))
    write_json_atomic(out / PROVENANCE_FILE, {
        "format_version": FORMAT_VERSION, "synthrel_version": synthrel.__version__, "git_sha": git_sha(Path(synthrel.__file__).parent),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": profiles[0] if len(profiles) == 1 else profiles, "n_rows": len(table),
        "metrics": sorted(set(table["metric"])), "sha256": _sha256(path), "packages": package_versions(),
        **provenance})
    log.info("reference table: %d models, %d rows -> %s", table["model"].nunique(), len(table), path)
    return path


def read_reference(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A published reference table and its provenance, checked (format version, columns, sha256)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / TABLE_FILE
    meta_path = path.with_name(PROVENANCE_FILE)
    if not path.is_file():
        raise DatasetError(f"reference table {path} not found (config key `stages.forecast.reference`)")
    if not meta_path.is_file():
        raise DatasetError(f"reference table {path} has no provenance file {meta_path.name} beside it")
    meta = read_json_artifact(meta_path, "a reference provenance record", "Download or publish the reference "
                              "again (its table and provenance file together)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{meta_path}: reference format version {meta.get('format_version')!r}; this synthrel "
                           f"({synthrel.__version__}) reads version {FORMAT_VERSION}")
    if meta.get("sha256") != _sha256(path):
        raise DatasetError(f"{path} does not match the sha256 recorded in {meta_path.name}: the table was changed "
                           "or the wrong provenance file lies beside it")
    table = read_parquet_artifact(path, "a reference table", "Download or publish the reference again")
    missing = [c for c in RESULT_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; a reference table needs {list(RESULT_COLUMNS)}")
    table["cls"] = table["cls"].fillna("").astype(str)
    return table, meta


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
