"""A stage is its config file plus one row of synthrel.stages.STAGES: the two agree, the config names a Job class
with `run()`, and every output key the preflight reads is a setting of that Job."""

import inspect

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from synthrel.run import CONF_DIR
from synthrel.stages import STAGE_ORDER, STAGE_OUTPUTS, STAGES

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


def test_run_and_preflight_read_the_registry():
    import synthrel.preflight.needs as needs
    import synthrel.run as run

    assert run.STAGE_ORDER is STAGE_ORDER and needs.STAGE_OUTPUTS is STAGE_OUTPUTS
    assert run.DISTRIBUTED_STAGES == ("train_controlnet",)
    assert set(run.SELF_LOGGING_STAGES) == {"train_controlnet", "correlate"}
