"""docs/guide/new-stage.md, followed as written: its Job, its config file and its row of the stage table make a
stage that composes, passes the key check and runs through synthrel.run.run_stages."""

import json
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

import synthrel.run as run
from synthrel import stages
from synthrel.errors import ConfigError
from synthrel.run import CONF_DIR, run_stages

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "new-stage.md"


def blocks(language: str) -> list[str]:
    return [re.sub(r"^   ", "", b, flags=re.M) for b in re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), re.S)]


@pytest.fixture
def toy_stage(tmp_path, monkeypatch):
    """The guide's stage, its Job in a package on sys.path (instead of synthrel/) and its config in a config folder
    of the user's (hydra.searchpath); returns a compose function."""
    job, row = blocks("python")
    (config,) = blocks("yaml")
    package = tmp_path / "code" / "counting"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "job.py").write_text(job)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    name = re.search(r"# @package stages\.(\w+)", config)[1]
    (tmp_path / "conf" / "stage").mkdir(parents=True)
    (tmp_path / "conf" / "stage" / f"{name}.yaml").write_text(config.replace("synthrel.counting.", "counting."))
    entry = eval(f"{{{row}}}", {"Stage": stages.Stage})  # the guide's row of synthrel/stages.py STAGES
    monkeypatch.setitem(stages.STAGES, name, entry[name])
    monkeypatch.setattr(run, "STAGE_ORDER", tuple(stages.STAGES))  # derived at import from STAGES

    def _compose(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                                                f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/run",
                                                f"+stage=[{name}]", *overrides])

    return name, _compose


def test_the_guides_stage_runs(toy_stage, tmp_path):
    name, compose_cfg = toy_stage
    cfg = compose_cfg()
    source = Path(cfg.stages[name].source)
    for i in range(3):
        (source / "frankfurt").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 2)).save(source / "frankfurt" / f"{i}.png")
    summary = run_stages(cfg)
    assert summary[name]["n_images"] == 3
    assert json.loads((Path(cfg.stages[name].output_dir) / "count.json").read_text()) == {"n_images": 3}
    assert stages.STAGES[name].outputs == ("output_dir",)


def test_a_misspelt_key_of_the_guides_stage_is_named(toy_stage):
    name, compose_cfg = toy_stage
    with pytest.raises(ConfigError, match=rf"unknown key `stages\.{name}\.forse`; did you mean `stages\.{name}\.force`\? "
                                          r"valid keys of stages\.count_images: force, output_dir, source$"):
        run_stages(compose_cfg(f"+stages.{name}.forse=true"))
