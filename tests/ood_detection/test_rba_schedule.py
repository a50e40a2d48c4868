"""RbA's outlier-exposure fine-tune runs the supplementary's 5000 iterations (A.4) unless RbA's own 2000 is named."""

import hydra
import pytest

FT = "stages.ood_detection.rba.finetune"


def job(compose_cfg, *overrides):
    cfg = compose_cfg("+stage=[ood_detection]", f"{FT}.enabled=true", *overrides)
    return hydra.utils.instantiate(cfg.stages.ood_detection)


@pytest.mark.parametrize("overrides, steps", [
    ((), 5000),                                             # supplementary A.4 (the paper)
    ((f"{FT}.schedule=rba_official",), 2000),               # RbA ckpts/swin_b_1dl_rba_ood_coco/config.yaml MAX_ITER
    ((f"{FT}.max_steps=300",), 300),                        # an explicit count overrides the schedule
    (("profile=tiny",), 2),                                 # the tiny profile keeps its short run
])
def test_finetune_steps_follow_the_schedule(compose_cfg, overrides, steps):
    assert job(compose_cfg, *overrides).finetune["max_steps"] == steps


def test_an_unknown_schedule_is_refused_with_the_valid_ones(compose_cfg):
    from synthrel.errors import ConfigError
    from synthrel.schemas import check_stage_settings

    cfg = compose_cfg("+stage=[ood_detection]", f"{FT}.enabled=true", f"{FT}.schedule=rba")
    with pytest.raises(ConfigError, match=rf"`{FT}.schedule` is 'rba' \(str\); expected one of 'supplementary', "
                                          "'rba_official'"):
        check_stage_settings(cfg)  # the run's check of every stage's settings, before the preflight


def test_the_budget_counts_the_schedule_the_stage_runs(compose_cfg):
    from benchmarks.budget import n

    assert n("rba_steps") == job(compose_cfg).finetune["max_steps"] == 5000
