"""Send analysis tables, figures and metrics to the configured Lightning loggers (CSV, wandb).

`logger` in the config is a dict name -> {_target_: pytorch_lightning.loggers.X, ...}. The CSV logger always
leaves files behind; wandb gets tables as wandb.Table and figures as wandb.Image. Every stage that logs is its
own wandb run: group = the task (experiment) name, job_type = the stage, and the run is finished when the stage
ends, also on failure. Lightning's WandbLogger leaves its run open and the next WandbLogger of the process joins
it, which put a whole demo (training, then the correlation tables) into one run; a multirun's jobs would merge
the same way (wandb/wandb#1314). `WANDB_MODE=offline` works without network (`wandb sync` later).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "__", key)


WANDB_LOGGER = "pytorch_lightning.loggers.WandbLogger"


def instantiate_loggers(logger_cfg: Mapping | None, job_type: str, key: str = "logger") -> list:
    """Lightning loggers from the `logger` configs (config key `key`); a wandb logger gets `job_type` (the stage)
    unless the config sets one. Entries that are already loggers pass through."""
    from hydra.utils import instantiate

    from synthrel.errors import ConfigError

    loggers = []
    for name, cfg in (logger_cfg or {}).items():
        if not cfg:
            continue
        if not isinstance(cfg, Mapping):
            loggers.append(cfg)
            continue
        if "_target_" not in cfg:
            raise ConfigError(f"`{key}.{name}` needs a `_target_` (a Lightning logger class, e.g. "
                              "pytorch_lightning.loggers.CSVLogger)")
        cfg = dict(cfg)
        if cfg["_target_"] == WANDB_LOGGER and not cfg.get("job_type"):
            cfg["job_type"] = job_type
        loggers.append(instantiate(cfg, _convert_="all"))
    return loggers


def finish_wandb(status: str = "success") -> None:
    """End the process's wandb run, if one is open, so that the next stage or sweep job starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=0 if status == "success" else 1)


@contextlib.contextmanager
def one_wandb_run():
    """The wandb run opened inside the block (e.g. by a Lightning Trainer's WandbLogger) ends with the block."""
    try:
        yield
    except BaseException:
        finish_wandb("failed")
        raise
    finish_wandb()


def log_step_losses(module, losses: Mapping, batch_idx: int, batch_size: int) -> None:
    """Log a training step's losses without waiting for the GPU. The loggers get them every step (Lightning reads
    them every `log_every_n_steps`); the progress bar gets a host copy at those optimizer steps only. Lightning
    turns progress-bar values into numbers at the end of every micro-batch: on a GPU tensor, a sync after which the
    GPU idles while the host prepares the next micro-batch (`python -m benchmarks.run throughput --train-profile`
    lists such waits)."""
    import torch

    module.log_dict(dict(losses), on_step=True, batch_size=batch_size)
    trainer = module.trainer
    every, last_micro_batch = trainer.log_every_n_steps, (batch_idx + 1) % trainer.accumulate_grad_batches == 0
    if every and last_micro_batch and (trainer.global_step + 1) % every == 0:  # Lightning's logging steps
        values = torch.stack([v.detach().float() for v in losses.values()]).cpu()  # one sync for them all
        module.log_dict({k.rsplit("/", 1)[-1]: v for k, v in zip(losses, values, strict=True)}, prog_bar=True,
                        logger=False, on_step=True, batch_size=batch_size)


class Tracker:
    """A thin fan-out over Lightning loggers; use as a context manager so the loggers are always closed."""

    def __init__(self, loggers: list | None = None):
        self.loggers = list(loggers or [])

    @classmethod
    def from_config(cls, logger_cfg: Mapping | None, job_type: str) -> Tracker:
        """Build from `logger` configs for one stage (`job_type`, the stage name)."""
        return cls(instantiate_loggers(logger_cfg, job_type))

    def _kind(self, logger) -> str:
        return type(logger).__name__

    def log_hyperparams(self, params: Mapping) -> None:
        for logger in self.loggers:
            logger.log_hyperparams(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and v == v}  # drop NaN
        for logger in self.loggers:
            logger.log_metrics(clean, step=step)

    def log_table(self, key: str, table: pd.DataFrame) -> None:
        import pandas as pd

        table = table.reset_index() if table.index.name or not isinstance(table.index, pd.RangeIndex) else table
        table = table.astype({c: object for c in table.columns if table[c].dtype.kind in "OUT"})
        table.columns = [str(c) for c in table.columns]
        for logger in self.loggers:
            if self._kind(logger) == "WandbLogger":
                logger.log_table(key=key, dataframe=table)
            elif getattr(logger, "log_dir", None):
                path = Path(logger.log_dir) / "tables" / f"{_safe_name(key)}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                table.to_csv(path, index=False)

    def log_figure(self, key: str, path: str | Path) -> None:
        for logger in self.loggers:
            if self._kind(logger) == "WandbLogger":
                logger.log_image(key=key, images=[str(path)])
            elif getattr(logger, "log_dir", None):
                target = Path(logger.log_dir) / "figures" / f"{_safe_name(key)}{Path(path).suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)

    def close(self, status: str = "success") -> None:
        try:
            for logger in self.loggers:
                logger.finalize(status)
        finally:
            finish_wandb(status)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("success" if exc_type is None else "failed")
