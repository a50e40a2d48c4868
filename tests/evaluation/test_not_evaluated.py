"""An evaluate run leaves out the models that have no weights (the 6 of paper40 without a public checkpoint),
named or not, so that a sweep over the zoo runs; it says why in its summary and in the results store, the report
lists them, and a model that gets its weights later is no longer listed."""

from __future__ import annotations

import json

import pytest

from synthrel.analysis.jobs import CorrelateJob
from synthrel.analysis.report import _summary
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


def test_models_without_weights_are_left_out_with_the_reason(kwargs, tmp_path, tiny_pspnet):
    summary = EvaluateJob(**kwargs).run()
    assert summary["evaluated"] == 1
    assert list(summary["not_evaluated"]) == ["segmenter"]
    reason = summary["not_evaluated"]["segmenter"]
    assert reason.startswith("no public Cityscapes checkpoint: set `zoo.models.segmenter.checkpoint`")
    store = tmp_path / "res" / "tz"
    assert json.loads((store / NOT_EVALUATED / "segmenter.json").read_text()) == {"model": "segmenter",
                                                                                "reason": reason}
    assert not (store / "segmenter").exists()
    # one job of a sweep that names only that model: nothing to evaluate, no error, the reason recorded
    assert EvaluateJob(**{**kwargs, "models": ["segmenter"]}).run()["evaluated"] == 0
    correlate = CorrelateJob(output_dir=str(tmp_path / "analysis"), results_root=str(store))
    assert correlate._not_evaluated() == {"segmenter": reason}
    assert f"1 zoo model(s) not evaluated: segmenter ({reason})" in _summary({"not_evaluated": {"segmenter": reason}})
    # the user supplies the weights: the model is evaluated and no longer listed
    _, entry = tiny_pspnet
    given = {**kwargs, "zoo": {"name": "tz", "models": {"psp": entry, "segmenter": entry}}}
    assert EvaluateJob(**given).run()["evaluated"] == 1
    assert correlate._not_evaluated() == {}
