"""The `qualitative` stage (Fig. 15 / Fig. 16 for chosen zoo models, experiments/fig15_16.sh), on demo data."""

import json
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from forecast_world import build_data
from hydra.errors import InstantiationException

from synthrel.data.acdc import ACDCDataset
from synthrel.data.synthetic import SyntheticDataset


class Recording:
    """A model as the figures see it (`logits` of a (1, H, W, 3) batch) that records the images it is shown."""

    def __init__(self, cls):
        self.cls, self.seen = cls, []

    def logits(self, images):
        self.seen.append(np.asarray(images[0]).copy())
        out = torch.zeros(1, 19, *images.shape[1:3])
        out[:, self.cls] = 5.0
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("qualitative")
    build_data(root / "outputs")
    return root


def compose(world, *overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from synthrel.run import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[
            f"paths.root_dir={world}", f"paths.output_dir={world}/run", "profile=tiny", "+stage=[qualitative]",
            "task_name=fig15_16", *overrides])


def test_fig15_shows_the_real_test_split_and_the_synthetic_set_of_each_domain(world, monkeypatch):
    models = {"segformer_b0": Recording(0), "pspnet_r18": Recording(13)}
    monkeypatch.setattr("synthrel.zoo.predictor.build_segmenter", lambda entry, *a, **k: models[entry.key])
    cfg = compose(world, "stages.qualitative.models=[segformer_b0,pspnet_r18]",
                  *(f"~stages.qualitative.domains.{d}" for d in ("rain", "snow", "india")),  # fog, night kept
                  "stages.qualitative.ood_datasets=[road_anomaly]", "stages.qualitative.images=2")
    summary = hydra.utils.instantiate(cfg.stages.qualitative).run()
    out = Path(summary["analysis_dir"])
    assert summary["n_figures"] == 2
    for stem in ("fig15_predictions", "fig16_ood_confidence"):
        assert all((out / f"{stem}.{ext}").stat().st_size for ext in ("png", "pdf"))
    data, synthetic = world / "outputs" / "tiny" / "data", world / "outputs" / "tiny" / "artifacts" / "synthetic" / "sd15"
    # rows in order: each domain's relis test split (ACDC train scenes), then its synthetic set; then 2 OOD images
    expected = []
    for condition in ("fog", "night"):
        expected.append(ACDCDataset(data / "ACDC", condition=condition, split="train")[0]["image"])
        expected.append(SyntheticDataset(synthetic / condition)[0]["image"])
    for model in models.values():
        assert len(model.seen) == len(expected) + 2
        for seen, image in zip(model.seen, expected, strict=False):
            np.testing.assert_array_equal(seen, image)
    index = json.loads((out / "qualitative_outputs.json").read_text())
    assert [i["title"].split(":")[0] for i in index] == ["Fig. 15", "Fig. 16"]
    assert "acdc_fog_test" in index[0]["title"] and "road_anomaly" in index[1]["title"]


def test_models_must_be_named_and_known(world):
    with pytest.raises(InstantiationException, match=r"stages.qualitative.models is empty"):
        hydra.utils.instantiate(compose(world).stages.qualitative)
    with pytest.raises(InstantiationException, match=r"unknown zoo model 'segformer_b5'.*stages.qualitative.models"):
        hydra.utils.instantiate(compose(world, "stages.qualitative.models=[segformer_b5]").stages.qualitative)


def test_real_split_all_draws_the_whole_sets(world):
    cfg = compose(world, "real_split=all", "stages.qualitative.models=[segformer_b0]")
    assert dict(cfg.stages.qualitative.domains) == {"fog": "acdc_fog", "night": "acdc_night", "rain": "acdc_rain",
                                                    "snow": "acdc_snow", "india": "idd"}
