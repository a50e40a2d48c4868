"""The one table of the pipeline's stages: their order and what the run and the preflight need to know of each.

A stage is its config `synthrel/conf/stage/<name>.yaml` (whose `_target_` names its Job class, a class with a
`run()` method returning its summary) plus one row here; `tests/core/test_stages.py` fails when the two disagree.
Guide: docs/guide/new-stage.md. Kept free of module-level imports so that the command line stays fast to start.
`python -m synthrel.stages` prints the stage -> Job class (module) table that docs/architecture.md shows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    #: config keys of the folders the stage writes: an input under one of them is made by that stage (preflight)
    outputs: tuple[str, ...] = ()
    #: runs in every process of a multi-process launch (the others run in rank 0 only: a DDP relaunch runs the
    #: whole command again in each new rank, after rank 0 has run the stages before)
    distributed: bool = False
    #: opens its own tracker run (training curves; analysis tables and figures); every other stage gets one wandb
    #: run (with `logger=wandb`) holding its settings and the numbers of its summary
    self_logging: bool = False


#: name -> Stage, in pipeline order (a run runs its selected stages in this order)
STAGES: dict[str, Stage] = {
    "tiny_models": Stage(outputs=("models_dir",)),
    "demo_data": Stage(outputs=("root",)),
    "train_zoo": Stage(),
    "caption": Stage(outputs=("output_dir",)),
    "train_controlnet": Stage(outputs=("output_dir",), distributed=True, self_logging=True),
    "generate": Stage(outputs=("out_root",)),
    "corrupt": Stage(outputs=("output_dir",)),
    "physics_fog": Stage(outputs=("output_dir",)),
    "inpaint": Stage(outputs=("out_dir",)),
    "evaluate": Stage(),
    "calibrate": Stage(),
    "ood_detection": Stage(),
    "fid": Stage(),
    "correlate": Stage(self_logging=True),
    "forecast": Stage(),
    "qualitative": Stage(),
    "report": Stage(),
}

#: root config keys (synthrel/conf/config.yaml) that a stage's Job receives when it takes a parameter of that name
#: and its config file does not set it: stated once for the whole run, never repeated in the stage files
INHERITED = ("seed",)

STAGE_ORDER = tuple(STAGES)
STAGE_OUTPUTS = {name: stage.outputs for name, stage in STAGES.items() if stage.outputs}
DISTRIBUTED_STAGES = tuple(name for name, stage in STAGES.items() if stage.distributed)
SELF_LOGGING_STAGES = tuple(name for name, stage in STAGES.items() if stage.self_logging)


def inherited(cfg, name: str) -> dict:
    """The INHERITED root settings of the composed config `cfg` that stage `name`'s Job takes and its config leaves
    unset (`+stages.<name>.seed=...` on the command line wins over the run's `seed`)."""
    import inspect

    from hydra.utils import get_class

    stage = cfg.stages[name]
    parameters = inspect.signature(get_class(stage["_target_"])).parameters
    return {key: cfg[key] for key in INHERITED if key in parameters and key not in stage and key in cfg}


def build_job(cfg, name: str):
    """Stage `name`'s Job from the composed config `cfg`: its settings plus the inherited ones it takes."""
    from hydra.utils import instantiate

    return instantiate(cfg.stages[name], _convert_="all", **inherited(cfg, name))


def stage_table() -> list[tuple[str, str, tuple[str, ...]]]:
    """(stage, its Job class as its config's `_target_` names it: module path + class, its output keys), in run
    order. The `_target_` names the module that defines the class (tests/core/test_stages.py)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    folder = Path(__file__).resolve().parent / "conf" / "stage"
    return [(name, OmegaConf.load(folder / f"{name}.yaml")["_target_"], stage.outputs) for name, stage in STAGES.items()]


def main() -> None:
    """Print the stage table as markdown: where each stage's code lives."""
    print("| stage | Job class (`_target_`) | module file | writes (config keys) |\n|---|---|---|---|")
    for name, target, outputs in stage_table():
        module = "synthrel/" + target.rsplit(".", 1)[0].removeprefix("synthrel.").replace(".", "/") + ".py"
        print(f"| `{name}` | `{target}` | `{module}` | {', '.join(f'`{k}`' for k in outputs)} |")


if __name__ == "__main__":
    main()
