"""`stages.evaluate.num_workers: auto` (the default): loader workers from the CPU cores the process may use."""

from __future__ import annotations

import os

import pytest

from synthrel.errors import ConfigError
from synthrel.evaluation.job import EvaluateJob

BASE = dict(zoo={"name": "z", "models": {}}, dataset_configs={"cityscapes": {"root": "/nowhere"}},
            datasets=["cityscapes"], output_dir="/tmp/unused", device="cpu")


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 1), (4, 3), (9, 8), (16, 8), (128, 8)])
def test_auto_is_the_usable_cores_but_one_at_most_8(monkeypatch, cores, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert EvaluateJob(**BASE, num_workers="auto").num_workers == workers
    assert EvaluateJob(**BASE, num_workers=3).num_workers == 3  # a number stays


def test_the_stage_default_is_auto():
    from omegaconf import OmegaConf

    from synthrel.run import CONF_DIR

    assert OmegaConf.load(CONF_DIR / "stage" / "evaluate.yaml").num_workers == "auto"


def test_negative_num_workers_is_refused_by_key():
    with pytest.raises(ConfigError, match=r"`stages.evaluate.num_workers` must be an integer >= 0 or auto"):
        EvaluateJob(**BASE, num_workers=-1)


@pytest.mark.parametrize("bad", ["many", 2.5, True])
def test_num_workers_of_another_type_is_refused_by_the_schema(bad):
    """Types are the stage schema's (synthrel/schemas.py, checked at composition): the key and what it takes."""
    from synthrel.schemas import check_settings

    problems = check_settings(EvaluateJob, {"num_workers": bad}, "stages.evaluate")
    assert any("stages.evaluate.num_workers" in p and "auto" in p for p in problems), problems
