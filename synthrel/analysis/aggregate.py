"""Load the long results tables written per (model, dataset) job, or collected from Hydra sweep folders.

Tables from different profiles or experiments must never be pooled silently (a tiny-profile row among
paper rows would corrupt every correlation), so the loader refuses to mix them and names the odd file.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import yaml

from synthrel.errors import DatasetError
from synthrel.jobs import ArtifactError, read_parquet_artifact

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("model", "family", "dataset", "domain", "generator", "metric", "cls", "value", "n_images", "profile")
RESULT_FILENAMES = ("metrics.parquet",)
CALIBRATION_FILENAMES = ("calibration.parquet",)
CONSISTENCY_COLUMNS = ("profile", "experiment")


def find_tables(roots: str | os.PathLike | Iterable[str | os.PathLike], filenames=RESULT_FILENAMES) -> list[Path]:
    """All table files under the roots (a parquet file, or its CSV twin where the parquet is missing)."""
    files: dict[Path, None] = {}
    for root in [roots] if isinstance(roots, (str, os.PathLike)) else roots:
        root = Path(root)
        if root.is_file():
            files[root.resolve()] = None
            continue
        if not root.is_dir():
            raise DatasetError(f"results root {root} does not exist (config key `results_root` or `sweep_dirs`)")
        for name in filenames:
            for path in sorted(root.rglob(name)):
                files[path.resolve()] = None
            for csv in sorted(root.rglob(Path(name).with_suffix(".csv").name)):
                if not csv.with_suffix(".parquet").exists():
                    files[csv.resolve()] = None
    return sorted(files)


TABLE_REPAIR = ("Run the stage that wrote it again (evaluate or calibrate: a re-run redoes damaged results), or "
                "remove the file from the results root")


def read_table(path: Path, required: Sequence[str] = RESULT_COLUMNS) -> pd.DataFrame:
    if path.suffix == ".parquet":
        df = read_parquet_artifact(path, "a results table", TABLE_REPAIR)
    else:
        try:
            df = pd.read_csv(path, keep_default_na=False)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise ArtifactError(f"{path}: cannot be read as a results table (a CSV file; {type(error).__name__}: "
                                f"{error}). {TABLE_REPAIR}") from error
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; a results table needs {list(required)}")
    df = df.copy()
    if "cls" in df.columns:
        df["cls"] = df["cls"].fillna("").astype(str)
    df["source"] = str(path)
    return df


def check_consistent(tables: Sequence[pd.DataFrame]) -> None:
    """Raise if the tables come from different profiles or experiments, naming the first odd file."""
    for column in CONSISTENCY_COLUMNS:
        reference = None
        for df in tables:
            if column not in df.columns:
                continue
            values = sorted(set(df[column].astype(str)))
            source = df["source"].iloc[0] if len(df) else "?"
            if len(values) > 1:
                raise DatasetError(f"{source} mixes {column} values {values}; one table per {column}")
            if not values:
                continue
            if reference is None:
                reference = (values[0], source)
            elif values[0] != reference[0]:
                raise DatasetError(
                    f"refusing to mix {column}s: {source} has {column}={values[0]!r} but {reference[1]} has "
                    f"{column}={reference[0]!r}; point results_root/sweep_dirs at one {column} only"
                )


def load_results(
    roots: str | os.PathLike | Iterable[str | os.PathLike],
    filenames: Sequence[str] = RESULT_FILENAMES,
    required: Sequence[str] = RESULT_COLUMNS,
) -> pd.DataFrame:
    """Concatenate every table under `roots` into one long table with a `source` column."""
    paths = find_tables(roots, filenames)
    if not paths:
        raise DatasetError(f"no {' or '.join(filenames)} found under {roots}; run the evaluate stage first")
    tables = [read_table(p, required) for p in paths]
    check_consistent(tables)
    log.info("loaded %d table(s), %d rows", len(tables), sum(len(t) for t in tables))
    return pd.concat(tables, ignore_index=True)


def sweep_job_dirs(sweep_dir: str | os.PathLike) -> list[Path]:
    """Job folders of a Hydra sweep: those holding .hydra/config.yaml (multirun/<date>/<job_num>/)."""
    return sorted(p.parent.parent for p in Path(sweep_dir).rglob(".hydra/config.yaml"))


def job_result_dirs(job_dir: Path) -> list[Path]:
    """The result folders a finished job owns: the `result_dirs` its stages listed in summary.yaml (the evaluate
    stage lists each (model, dataset) folder it evaluated or found done). Never a shared results root, so
    results of other runs under the same root stay out of the sweep's table."""
    dirs = []
    summary = job_dir / "summary.yaml"
    if summary.exists():
        for stage in (yaml.safe_load(summary.read_text()) or {}).values():
            dirs += [Path(d) for d in (stage or {}).get("result_dirs", []) if Path(d).is_dir()]
    return dirs


def collect_sweep(
    sweep_dirs: str | os.PathLike | Iterable[str | os.PathLike], filenames: Sequence[str] = RESULT_FILENAMES
) -> pd.DataFrame:
    """One table from Hydra sweep folders: each job's own tables, with `job_dir` and `overrides` (that job's
    command-line overrides)."""
    sweep_dirs = [sweep_dirs] if isinstance(sweep_dirs, (str, os.PathLike)) else list(sweep_dirs)
    tables, unfinished = [], []
    for sweep_dir in sweep_dirs:
        jobs = sweep_job_dirs(sweep_dir)
        if not jobs:
            raise DatasetError(f"{sweep_dir}: no job folder with .hydra/config.yaml (is this a Hydra sweep dir?)")
        for job in jobs:
            overrides_file = job / ".hydra" / "overrides.yaml"
            overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
            paths = list(dict.fromkeys(p for d in job_result_dirs(job) for p in find_tables(d, filenames)))
            if not paths:
                unfinished.append(job)
            for path in paths:
                df = read_table(path)
                df["job_dir"] = str(job)
                df["overrides"] = " ".join(overrides or [])
                tables.append(df)
    if unfinished:
        log.warning("%d job(s) without results in their summary.yaml `result_dirs` (failed, running, or not an "
                    "evaluate job): %s", len(unfinished), ", ".join(map(str, unfinished)))
    if not tables:
        raise DatasetError(f"no {' or '.join(filenames)} found from the jobs of {sweep_dirs} (each job's "
                           "summary.yaml `result_dirs`); run the sweep's evaluate jobs first")
    check_consistent(tables)
    return pd.concat(tables, ignore_index=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Collect Hydra sweep folders or results roots into one table.")
    parser.add_argument("inputs", nargs="+", help="sweep folders (multirun/<date>) or results roots")
    parser.add_argument("--out", required=True, help="output table (.parquet or .csv)")
    args = parser.parse_args(argv)
    is_sweep = any(sweep_job_dirs(p) for p in args.inputs)
    df = collect_sweep(args.inputs) if is_sweep else load_results(args.inputs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from synthrel.jobs import atomic_path

    with atomic_path(out) as tmp:
        df.to_parquet(tmp) if out.suffix == ".parquet" else df.to_csv(tmp, index=False)
    print(f"{len(df)} rows from {df['source'].nunique()} table(s) -> {out}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
