"""The real configs compose, resolve to the paper's values, and reject bad values by name."""

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from synthrel.config import check_domain
from synthrel.errors import ConfigError
from synthrel.run import CONF_DIR, STAGE_ORDER, run_stages

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
REQUIRED = ["covariate_fog", "covariate_night", "covariate_rain", "covariate_snow", "covariate_india",
            "ood_objects", "calibration", "ood_detection", "correlation", "demo"]


def test_required_experiments_exist():
    assert set(REQUIRED) <= set(EXPERIMENTS)


@pytest.mark.parametrize("profile", ["paper", "tiny", "smoke"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(compose_cfg, experiment, profile):
    if experiment == "demo" and profile == "paper":
        pytest.skip("the demo experiment is the tiny profile by definition")
    overrides = [f"+experiment={experiment}", f"profile={profile}"]
    if experiment == "covariate_custom":
        overrides.append("domain.name=volcanic ash")
    cfg = compose_cfg(*overrides)
    check_domain(cfg, cfg.domain.name)  # the domain agrees with itself and with what the stages need
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.stages, experiment
    assert set(cfg.stages) <= set(STAGE_ORDER)
    for stage in cfg.stages.values():
        assert stage._target_.startswith("synthrel.")


def test_covariate_fog_resolves_to_the_paper_sd15_settings(compose_cfg):
    cfg = compose_cfg("+experiment=covariate_fog")
    gen = cfg.stages.generate
    assert cfg.backbone.name == "sd15"
    assert gen.prompt_template == "<caption>, in fog"
    assert gen.num_inference_steps == 25
    assert gen.guidance_scale == 8.0
    assert gen.controlnet_conditioning_scale == 1.0
    assert gen.resolution == 512
    assert gen.num_samples == 512


def test_covariate_fog_with_sdxl_resolves_to_the_paper_sdxl_settings(compose_cfg):
    gen = compose_cfg("+experiment=covariate_fog", "backbone=sdxl").stages.generate
    assert gen.guidance_scale == 10.0
    assert gen.controlnet_conditioning_scale == 0.65
    assert gen.resolution == 1024
    assert gen.num_inference_steps == 25


def test_all_domains_has_the_28_prompts_of_table_3(compose_cfg):
    cfg = compose_cfg("domain=all_domains")
    assert len(cfg.domain.domains) == 28 and len(set(cfg.domain.domains)) == 28
    assert cfg.domain.pooled
    but_rain = compose_cfg("domain=all_domains_but_rain").domain.domains
    assert set(cfg.domain.domains) - set(but_rain) == {"rain"}


def test_paper42_lists_42_distinct_objects(compose_cfg):
    objects = compose_cfg().ood_objects.objects
    assert len(objects) == len(set(objects)) == 42


def test_profile_tiny_points_at_tiny_models_and_demo_data(compose_cfg, tmp_path):
    cfg = compose_cfg("profile=tiny", "backbone=sdxl")
    assert cfg.zoo.name == "tiny"
    assert cfg.backbone.pretrained == f"{tmp_path}/outputs/tiny/models/sdxl"
    assert cfg.datasets.cityscapes.root == f"{tmp_path}/outputs/tiny/data/cityscapes"


def test_wrong_type_is_rejected_with_its_key(compose_cfg):
    with pytest.raises(Exception, match="backbone.guidance_scale"):
        compose_cfg("backbone.guidance_scale=eight")


def test_no_stage_selected_is_a_clear_error(compose_cfg):
    with pytest.raises(ConfigError, match=r"\+experiment=demo"):
        run_stages(compose_cfg())


def test_unknown_stage_is_a_clear_error(compose_cfg):
    cfg = compose_cfg()
    cfg.stages = {"paint": {"_target_": "builtins.dict"}}
    with pytest.raises(ConfigError, match="valid names: tiny_models"):
        run_stages(cfg)


def test_unknown_group_option_lists_the_valid_names(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "synthrel.run", "domain=volcano", "--cfg", "job"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "Could not find 'domain/volcano'" in out.stderr + out.stdout
    for name in ["fog", "night", "rain", "snow", "india", "all_domains"]:
        assert name in out.stderr + out.stdout
