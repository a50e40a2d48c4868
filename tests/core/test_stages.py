"""A stage is its config file plus one row of synthrel.stages.STAGES: the two agree, the config names a Job class
with `run()`, every output key the preflight reads is a setting of that Job, and the run's `seed` reaches every
Job that takes one without any stage file restating it."""

import inspect

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from synthrel.run import CONF_DIR
from synthrel.stages import (
    INHERITED,
    STAGE_ORDER,
    STAGE_OUTPUTS,
    STAGES,
    build_job,
    inherited,
    main,
    stage_table,
)

CONFIGS = {p.stem: p for p in sorted((CONF_DIR / "stage").glob("*.yaml"))}


def test_every_stage_config_has_a_registry_row_and_the_reverse():
    assert sorted(set(CONFIGS) - set(STAGES)) == [], "stage configs without a row in synthrel/stages.py STAGES"
    assert sorted(set(STAGES) - set(CONFIGS)) == [], "rows of synthrel/stages.py STAGES without synthrel/conf/stage/<name>.yaml"
    assert STAGE_ORDER == tuple(STAGES) and len(STAGE_ORDER) == len(set(STAGE_ORDER))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_config_names_a_job_with_run_and_its_output_keys(name):
    raw = OmegaConf.load(CONFIGS[name])
    first_line = CONFIGS[name].read_text().splitlines()[0]
    assert first_line == f"# @package stages.{name}", "a stage config is placed under stages.<its file name>"
    job = get_class(raw._target_)
    assert callable(getattr(job, "run", None)), f"{raw._target_} has no run()"
    settings = inspect.signature(job).parameters
    for key in STAGE_OUTPUTS.get(name, ()):
        assert key in settings and key in raw, f"output key {key!r} of stage {name} is not a setting of its job"


def test_the_stage_table_names_the_module_file_that_defines_each_job(capsys):
    """`_target_` is the defining module's path plus the class (no re-export), so `python -m synthrel.stages` (and
    docs/architecture.md's table) point a reader at the file to open."""
    from pathlib import Path

    rows = stage_table()
    assert [name for name, _, _ in rows] == list(STAGE_ORDER)
    main()
    printed = capsys.readouterr().out.splitlines()[2:]
    for (name, target, outputs), line in zip(rows, printed, strict=True):
        module, cls = target.rsplit(".", 1)
        assert get_class(target).__module__ == module, f"{name}: {target} is a re-export; name {get_class(target).__module__}"
        path = Path(CONF_DIR).parents[1] / (module.replace(".", "/") + ".py")
        assert path.is_file() and f"class {cls}" in path.read_text(), path
        assert line.startswith(f"| `{name}` | `{target}` | `{path.relative_to(Path(CONF_DIR).parents[1])}` |"), line
        assert all(f"`{key}`" in line for key in outputs)


def test_run_and_preflight_read_the_registry():
    import synthrel.preflight.needs as needs
    import synthrel.run as run

    assert run.STAGE_ORDER is STAGE_ORDER and needs.STAGE_OUTPUTS is STAGE_OUTPUTS
    assert run.DISTRIBUTED_STAGES == ("train_controlnet",)
    assert set(run.SELF_LOGGING_STAGES) == {"train_controlnet", "correlate"}


def _takes(name: str, key: str) -> bool:
    return key in inspect.signature(get_class(OmegaConf.load(CONFIGS[name])._target_)).parameters


SEEDED = sorted(name for name in STAGES if _takes(name, "seed"))


def test_the_seed_is_stated_once_and_every_stage_that_takes_one_inherits_it(compose_cfg):
    for path in CONFIGS.values():
        restated = sorted(set(INHERITED) & set(OmegaConf.load(path)))
        assert not restated, f"{path} restates {restated}: the run's value reaches the job (synthrel.stages.INHERITED)"
    # the 13 stages that drew random numbers before the seed was inherited still do
    assert {"calibrate", "correlate", "corrupt", "demo_data", "evaluate", "fid", "generate", "inpaint", "ood_detection",
            "physics_fog", "tiny_models", "train_controlnet", "train_zoo"} <= set(SEEDED)
    cfg = compose_cfg(f"+stage=[{','.join(STAGES)}]", "profile=tiny", "seed=7")
    for name in STAGES:
        assert inherited(cfg, name) == ({"seed": 7} if name in SEEDED else {}), name
    assert inherited(compose_cfg("+stage=[corrupt]", "seed=7", "+stages.corrupt.seed=3"), "corrupt") == {}


def test_a_run_records_its_seed_and_a_stage_setting_wins(compose_cfg, tmp_path):
    """Through run_stages, as the command line runs it: the demo data's completion record holds the run's seed;
    `+stages.<stage>.seed` overrides it for that stage alone."""
    import json

    from synthrel.data.demo import DemoDataJob
    from synthrel.run import run_stages

    small = ["stages.demo_data.n_train=1", "stages.demo_data.n_val=1", "stages.demo_data.n_shift=1",
             "stages.demo_data.n_ood=1", "stages.demo_data.image_size=[64,32]"]
    cfg = compose_cfg("+stage=[demo_data]", "profile=tiny", "seed=5", f"paths.data_dir={tmp_path}/a", *small)
    run_stages(cfg)
    assert json.loads((tmp_path / "a" / DemoDataJob.MARKER).read_text())["params"]["seed"] == 5
    cfg = compose_cfg("+stage=[demo_data]", "profile=tiny", "seed=5", "+stages.demo_data.seed=9", *small,
                      f"paths.data_dir={tmp_path}/b")
    assert build_job(cfg, "demo_data").seed == 9
    run_stages(cfg)
    assert json.loads((tmp_path / "b" / DemoDataJob.MARKER).read_text())["params"]["seed"] == 9
