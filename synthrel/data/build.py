"""Building dataset readers from config: the one place a `_target_` dataset config becomes a reader.

A dataset config is a Hydra config of a reader class of synthrel.data (`{_target_: synthrel.data.acdc.ACDCDataset,
root: ..., condition: fog, split: val}`, synthrel/conf/dataset/*.yaml); the run's registry of them is `datasets`. Stages
build readers through these functions, never through hydra directly, so that arguments reach the readers as
plain Python values and an unknown name is reported with the config key and the valid names.
"""

from __future__ import annotations

from collections.abc import Mapping

from synthrel.errors import ConfigError, unknown_name


def build_dataset(config, split: str | None = None):
    """The reader of one dataset config; `split` (when given) overrides the config's own split."""
    import hydra.utils

    if not isinstance(config, Mapping) or "_target_" not in config:
        raise ConfigError(f"a dataset config needs a `_target_` (a reader of synthrel.data), got {config!r}")
    overrides = {"split": split} if split is not None else {}
    return hydra.utils.instantiate(config, **overrides, _convert_="all")


def dataset_by_name(datasets: Mapping, name: str, split: str | None = None, key: str = "datasets"):
    """Dataset `name` of the `datasets` registry (synthrel/conf/dataset); `key` names the config key that chose it."""
    if name not in datasets:
        raise unknown_name("dataset", name, datasets, key)
    return build_dataset(datasets[name], split)
