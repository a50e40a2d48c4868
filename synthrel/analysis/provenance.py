"""What produced an analysis: the Hydra config of the run, seeds, git SHA and package versions."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import yaml

PACKAGES = ("synthrel", "numpy", "scipy", "pandas", "matplotlib", "torch", "torchmetrics", "pytorch-lightning",
            "hydra-core", "omegaconf", "wandb", "mmsegmentation", "diffusers", "transformers")


def git_sha(path: str | Path = ".") -> str | None:
    """HEAD of the repository holding `path` (suffixed with '-dirty' when the tree has changes), or None."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def package_versions(packages=PACKAGES) -> dict[str, str]:
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def hydra_run_config(run_dir: str | Path | None) -> dict:
    """The composed config and overrides Hydra saved in <run_dir>/.hydra (empty when not run through Hydra)."""
    if not run_dir:
        return {}
    hydra_dir = Path(run_dir) / ".hydra"
    found = {}
    for name in ("config", "overrides"):
        path = hydra_dir / f"{name}.yaml"
        if path.exists():
            found[name] = yaml.safe_load(path.read_text())
    return found


def provenance(run_dir: str | Path | None = None) -> dict:
    repo = Path(__file__).resolve().parents[2]
    return {"git_sha": git_sha(repo), "packages": package_versions(), **hydra_run_config(run_dir)}
