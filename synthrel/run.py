"""Entry point: `synthrel +experiment=covariate_fog` or `python -m synthrel.run +experiment=covariate_fog`
(or `+stage=[generate,evaluate]`).

Every selected stage under `stages` is instantiated from its `_target_` (with the run's inherited settings such as
`seed`: synthrel.stages.INHERITED) and run, in pipeline order.
Module level imports only Hydra and the config schemas: `--help`, `--cfg` and shell completion never reach
`main`'s body, so torch, pandas and the FID code load there, when a run starts (benchmarks/cli_startup.py).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from synthrel.config import (  # (importing it registers the schemas and resolvers)
    check_domain,
    check_domain_named,
    check_local_config,
    check_run_keys,
    check_shard_used,
)
from synthrel.errors import ConfigError
from synthrel.stages import DISTRIBUTED_STAGES, SELF_LOGGING_STAGES, STAGE_ORDER, build_job, inherited

log = logging.getLogger("synthrel")

CONF_DIR = Path(__file__).resolve().parent / "conf"


def run_stages(cfg: DictConfig) -> RunSummaries:
    """Instantiate and run the stages of `cfg.stages` in pipeline order; return their summaries."""
    check_run_keys(cfg)
    stages = cfg.get("stages") or {}
    if not stages:
        experiments = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
        raise ConfigError(
            "nothing to run: choose an experiment (e.g. `+experiment=demo`; available: "
            f"{', '.join(experiments)}) or stages (e.g. `+stage=[generate]`; available: {', '.join(STAGE_ORDER)})"
        )
    unknown = [name for name in stages if name not in STAGE_ORDER]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown} under `stages`; valid names: {', '.join(STAGE_ORDER)}")
    check_domain_named(cfg)
    check_shard_used(cfg)
    from synthrel.schemas import check_stage_settings

    check_stage_settings(cfg)
    from synthrel.runstats import check_released, count_images, measure, write_stage_table
    from synthrel.runtime import is_secondary_rank

    summaries, stats = {}, []
    table = cfg.get("stage_table") or {}
    secondary = is_secondary_rank()
    for name in sorted(stages, key=STAGE_ORDER.index):
        if secondary and name not in DISTRIBUTED_STAGES:
            log.info("stage %s: left to rank 0 (this process is another rank of a multi-process launch)", name)
            continue
        log.info("stage %s: starting", name)
        with measure(name) as stage_stats:
            job = build_job(cfg, name)
            with _stage_tracker(cfg, name) as tracker:
                summaries[name] = job.run() or {}
                if tracker is not None:
                    tracker.log_metrics(_numbers(summaries[name], f"{name}/"))
            del job  # the stage's models go with it: measure() collects them and empties the CUDA cache
        stage_stats.images = count_images(summaries[name])
        stage_stats.steady = summaries[name].get("steady_rates")
        stats.append(stage_stats)
        log.info("stage %s: done in %.1f s %s", name, stage_stats.wall_s, summaries[name])
        if table.get("enabled"):  # after every stage: a run that fails or is killed later keeps its rows
            write_stage_table(stats, cfg.paths.output_dir, str(cfg.get("device", "auto")),
                              OmegaConf.select(cfg, "backbone.name"), comparable=_real_size(cfg))
    leaks = check_released(stats, float(table.get("release_margin_mb", 256)))
    if leaks:
        message = "GPU memory not released between stages:\n  " + "\n  ".join(leaks)
        if table.get("enabled"):
            from synthrel.runstats import MemoryNotReleasedError

            raise MemoryNotReleasedError(message)
        log.warning("%s", message)
    return RunSummaries(summaries, stats)


def _real_size(cfg: DictConfig) -> bool:
    """The run's models are the paper's architectures at real size (paper, smoke), not tiny ones."""
    return not OmegaConf.select(cfg, "profile.tiny", default=False) or OmegaConf.select(
        cfg, "profile.model_size", default="tiny") == "real"


class RunSummaries(dict):
    """The stages' summaries (stage -> its job's summary), and `stats`: each stage's wall time and GPU memory."""

    def __init__(self, summaries: dict, stats: list):
        super().__init__(summaries)
        self.stats = stats

    def with_stats(self) -> dict:
        """Each summary with its stage's `stage_stats` (what summary.yaml holds)."""
        # `steady` is the summary's own `steady_rates`: not twice
        by_stage = {s.stage: {k: v for k, v in vars(s).items() if k not in ("stage", "steady")} for s in self.stats}
        return {name: {**summary, "stage_stats": by_stage.get(name)} for name, summary in self.items()}


def stage_typos(args: list[str]) -> list[str]:
    """Names in a `+stage=[...]` command-line override that no stage config has (Hydra's own error for a list
    override lists no options). Overrides Hydra cannot parse are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    known = {p.stem for p in (CONF_DIR / "stage").glob("*.yaml")}
    unknown = []
    for arg in args:
        if not arg.lstrip("+~").startswith("stage="):
            continue
        try:
            (override,) = OverridesParser.create().parse_overrides([arg])
        except Exception:  # noqa: BLE001 - Hydra reports its own syntax errors
            continue
        values = override.sweep_iterator() if override.is_sweep_override() else [override.value()]
        for value in values:
            for name in value if isinstance(value, list) else [value]:
                if isinstance(name, str) and name not in known and name not in unknown:
                    unknown.append(name)
    return unknown


def main() -> None:
    """The `synthrel` command: stage names are checked before Hydra composes, then the run."""
    own_folder = any(arg.startswith(("hydra.searchpath", "--config-dir", "-cd")) for arg in sys.argv[1:])
    typos = [] if own_folder else stage_typos(sys.argv[1:])  # a user's config folder may add stages
    if typos:
        sys.exit(f"synthrel: unknown stage(s) {', '.join(typos)} in `+stage=[...]`; valid stages: "
                 f"{', '.join(STAGE_ORDER)}")
    hydra_main()


def _stage_tracker(cfg: DictConfig, name: str):
    """A wandb run for stage `name` (group = task, job_type = the stage) with its scalar settings, or None."""
    from synthrel.tracking import WANDB_LOGGER, Tracker

    logger = cfg.get("logger")
    if name in SELF_LOGGING_STAGES or not logger:
        return contextlib.nullcontext()
    loggers = OmegaConf.to_container(logger, resolve=True) if OmegaConf.is_config(logger) else dict(logger)
    wandb = {key: value for key, value in loggers.items() if value and value.get("_target_") == WANDB_LOGGER}
    if not wandb:
        return contextlib.nullcontext()
    tracker = Tracker.from_config(wandb, job_type=name)
    settings = {**OmegaConf.to_container(cfg.stages[name], resolve=True), **inherited(cfg, name)}
    tracker.log_hyperparams({key: value for key, value in settings.items()
                             if isinstance(value, (str, int, float, bool)) and not key.startswith("_")})
    return tracker


def _numbers(summary: dict, prefix: str) -> dict[str, float]:
    """The numbers of a stage summary, nested keys joined with "/" (counts, success rates...)."""
    numbers = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            numbers.update(_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers[f"{prefix}{key}"] = value
    return numbers


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from synthrel.preflight import gate as preflight_gate
    from synthrel.runtime import is_secondary_rank, setup_runtime

    check_local_config()
    check_run_keys(cfg)
    check_domain_named(cfg)
    check_shard_used(cfg)
    setup_runtime(cfg.get("cpu_threads"))
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from synthrel.schemas import check_stage_settings

    check_domain(cfg, HydraConfig.get().runtime.choices.get("domain"))
    check_stage_settings(cfg)  # every stage's settings against its Job class, before the preflight
    log.info("profile=%s task=%s output_dir=%s", cfg.profile.name, cfg.task_name, cfg.paths.output_dir)
    from synthrel.runstats import environment

    log.info("%s", environment(cfg))  # fails here, before any stage, when CUDA is asked for but absent
    if preflight_gate(cfg, STAGE_ORDER):  # preflight=true / download: report only
        return
    summaries = run_stages(cfg)
    if is_secondary_rank():  # rank 0 writes the run's summary
        return
    out = Path(cfg.paths.output_dir)
    OmegaConf.save(OmegaConf.create(summaries.with_stats()), out / "summary.yaml")
    print(f"\nsynthrel: {cfg.task_name} finished; logs and summary in {out}")
    for name, summary in summaries.items():
        for key, value in summary.items():
            if key.endswith(("_dir", "_path", "report")):
                print(f"  {name}.{key}: {value}")
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # every job of the sweep is under this one folder
        sweep = Path(hydra_cfg.sweep.dir).resolve()
        print(f"  sweep folder: {sweep}\n  one table of the sweep's results: "
              f"python -m synthrel.analysis.aggregate {sweep} --out <table>.parquet")


if __name__ == "__main__":
    main()
