"""Domain configs cannot contradict themselves: folder, prompt and real counterpart follow domain.name; a
renamed built-in domain becomes a custom one (logged) or, where the run needs real data, is refused with the
fix. Checked on the composed config and through the CLI as a user runs it."""

import logging
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from synthrel.config import check_domain
from synthrel.errors import ConfigError

# The real counterparts of spec section 2.1, written out here rather than read from synthrel.config.
SPEC_REAL = {"fog": "acdc_fog", "night": "acdc_night", "rain": "acdc_rain", "snow": "acdc_snow", "india": "idd"}


def generate(cfg) -> dict:
    return OmegaConf.to_container(cfg.stages.generate, resolve=True)


@pytest.mark.parametrize("name", sorted(SPEC_REAL))
def test_builtin_domain_folder_prompt_and_real_splits_follow_its_name(compose_cfg, name):
    cfg = compose_cfg("+experiment=calibration", "+stage=[generate]", f"domain={name}")
    check_domain(cfg, name)
    gen = generate(cfg)
    assert gen["domains"] == [name] and gen["set_name"] == name and gen["prompt_template"] == f"<caption>, in {name}"
    assert cfg.datasets.synthetic.root.endswith(f"/synthetic/sd15/{name}")
    assert cfg.domain.real_dataset == SPEC_REAL[name]
    real = SPEC_REAL[name]
    assert list(cfg.stages.calibrate.targets) == [f"{real}_test"]
    assert {f"{real}_calib", f"{real}_test", "cityscapes_calib"} <= set(cfg.stages.evaluate.datasets)


def test_renamed_builtin_becomes_a_custom_domain_and_the_log_says_so(compose_cfg, caplog):
    cfg = compose_cfg("+stage=[generate]", "domain=fog", "domain.name=sandstorm")
    with caplog.at_level(logging.WARNING, logger="synthrel.config"):
        check_domain(cfg, "fog")
    assert "domain=fog renamed to 'sandstorm': a custom domain" in caplog.text and "acdc_fog is not used" in caplog.text
    gen = generate(cfg)
    assert gen["domains"] == ["sandstorm"] and gen["prompt_template"] == "<caption>, in sandstorm"
    assert cfg.datasets.synthetic.root.endswith("/synthetic/sd15/sandstorm")
    assert cfg.domain.real_dataset is None


def test_renamed_builtin_is_refused_where_the_run_needs_its_real_data(compose_cfg):
    cfg = compose_cfg("+experiment=covariate_fog", "domain.name=sandstorm")
    with pytest.raises(ConfigError, match=r"'sandstorm' has no real counterpart.*domain=custom domain\.name="
                                          r"'sandstorm'.*config key `stages\.evaluate\.datasets\[1\]`"):
        check_domain(cfg, "fog")
    cfg = compose_cfg("+experiment=calibration", "domain=rain", "domain.name=drizzle")
    with pytest.raises(ConfigError, match="'drizzle' has no real counterpart"):
        check_domain(cfg, "rain")


def test_renaming_to_another_builtin_is_that_domain(compose_cfg):
    cfg = compose_cfg("+experiment=covariate_fog", "domain.name=night")
    check_domain(cfg, "fog")
    assert cfg.domain.real_dataset == "acdc_night" and "acdc_night_test" in cfg.stages.evaluate.datasets


@pytest.mark.parametrize("override, message", [
    ("domain.domains=[snow]", r"domain\.domains=\['snow'\] contradicts domain\.name='fog'"),
    ("domain.prompt='<caption>, in thick fog'", r"changes the prompt of the built-in domain 'fog'.*domain=custom"),
    ("domain.real_dataset=acdc_snow", r"contradicts the built-in domain 'fog'.*domain=custom"),
])
def test_contradictions_inside_a_builtin_domain_are_refused(compose_cfg, override, message):
    cfg = compose_cfg("+stage=[generate]", "domain=fog", override)
    with pytest.raises(ConfigError, match=message):
        check_domain(cfg, "fog")


def test_custom_domain_may_name_its_real_data(compose_cfg):
    cfg = compose_cfg("+experiment=calibration", "domain=custom", "domain.name=dusk", "domain.real_dataset=acdc_night")
    check_domain(cfg, "custom")
    assert list(cfg.stages.calibrate.targets) == ["acdc_night_test"]
    cfg = compose_cfg("+experiment=covariate_custom", "domain.name=volcanic ash")
    check_domain(cfg, "custom")  # no stage asks for real data
    assert cfg.domain.real_dataset is None


def cli(tmp_path, *overrides):
    out = subprocess.run([sys.executable, "-m", "synthrel.run", *overrides], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    return out.returncode, out.stdout + out.stderr


def test_cli_rename_is_refused_before_any_stage_or_custom_with_a_log_line(tmp_path):
    rc, text = cli(tmp_path, "+experiment=covariate_fog", "domain.name=sandstorm")
    assert rc != 0 and "ConfigError: domain 'sandstorm' has no real counterpart" in text
    assert "domain=custom domain.name='sandstorm'" in text and "stage generate: starting" not in text
    assert not (tmp_path / "outputs" / "artifacts").exists()
    # without a stage that needs real data the renamed domain runs as a custom one (here the preflight then stops
    # on the Cityscapes label maps this empty folder lacks: the sandstorm set was about to be made)
    rc, text = cli(tmp_path, "+stage=[generate]", "domain.name=sandstorm")
    assert "domain=fog renamed to 'sandstorm': a custom domain" in text
    assert rc != 0 and "cityscapes" in text.lower() and "missing" in text.lower()
