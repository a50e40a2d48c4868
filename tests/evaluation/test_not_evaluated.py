"""A whole-zoo evaluate run leaves out the models that have no weights (the 6 of paper40 without a public
checkpoint), says why in its summary and in not_evaluated.json, and the report lists them; naming such a model
explicitly is an error."""

from __future__ import annotations

import json

import pytest

from synthrel.analysis.report import _summary
from synthrel.errors import WeightsError
from synthrel.evaluation import NOT_EVALUATED
from synthrel.evaluation.job import EvaluateJob


@pytest.fixture
def kwargs(tmp_path, tiny_pspnet, cityscapes_dir):
    _, entry = tiny_pspnet
    no_weights = {**entry, "checkpoint": None, "needs_user_checkpoint": True}
    return dict(zoo={"name": "tz", "models": {"psp": entry, "segmenter": no_weights}},
                dataset_configs={"cityscapes": {"_target_": "synthrel.data.cityscapes.CityscapesDataset",
                                                "root": str(cityscapes_dir)}},
                datasets=["cityscapes"], output_dir=str(tmp_path / "res"), batch_size=2, num_workers=0,
                calib_pixels_per_image=0, device="cpu", profile="tiny")


def test_whole_zoo_run_skips_models_without_weights_with_the_reason(kwargs, tmp_path):
    summary = EvaluateJob(**kwargs).run()
    assert summary["evaluated"] == 1
    assert list(summary["not_evaluated"]) == ["segmenter"]
    assert "no public Cityscapes checkpoint: set `zoo.models.segmenter.checkpoint`" in summary["not_evaluated"][
        "segmenter"]
    recorded = json.loads((tmp_path / "res" / "tz" / NOT_EVALUATED).read_text())
    assert recorded == summary["not_evaluated"]
    assert not (tmp_path / "res" / "tz" / "segmenter").exists()
    assert "1 zoo model(s) not evaluated: segmenter (no public Cityscapes checkpoint" in _summary(
        {"not_evaluated": recorded})


def test_model_named_explicitly_must_have_weights(kwargs):
    with pytest.raises(WeightsError, match=r"model 'segmenter' has no checkpoint .*zoo.models.segmenter.checkpoint"):
        EvaluateJob(**{**kwargs, "models": ["segmenter"]}).run()
