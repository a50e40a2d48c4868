"""Bring your own model: the `model` config group builds a zoo entry for mmseg, transformers and Python models;
label mappings; and the test-batch check that stops a wrong model before any evaluation."""

import json

import numpy as np
import pytest
import torch

from synthrel.conventions import NUM_CLASSES
from synthrel.errors import ConfigError
from synthrel.tiny.segmentation import ensure_tiny_segmenter
from synthrel.zoo.labels import MISSING_LOGIT, LabelMap
from synthrel.zoo.predictor import build_segmenter, check_on_batch
from synthrel.zoo.registry import zoo_entries

IMAGES = np.random.default_rng(3).integers(0, 256, (2, 48, 96, 3), dtype=np.uint8)  # seeded test batch


class ConvModel(torch.nn.Module):
    """A user's model: 1x1 convolution to `n_classes`, output at half resolution (or as `layout` says)."""

    def __init__(self, n_classes=NUM_CLASSES, layout="dense", fail=False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, n_classes, 1)
        self.layout, self.fail = layout, fail

    def forward(self, x):
        if self.fail:
            raise RuntimeError("CUDA kernel image not available")
        out = self.conv(x[..., ::2, ::2])
        if self.layout == "transposed":
            return out.transpose(2, 3)
        if self.layout == "pooled":
            return out.mean((2, 3), keepdim=True)
        if self.layout == "nan":
            return out * float("nan")
        return {"out": out} if self.layout == "dict" else out


def build_conv(checkpoint=None, **kwargs):
    model = ConvModel(**kwargs)
    if checkpoint:
        model.load_state_dict(torch.load(checkpoint))
    return model


def python_entry(label_map=None, **builder):
    spec = {"family": "user", "framework": "python", "builder": {"_target_": f"{__name__}.build_conv", **builder},
            "label_map": label_map}
    return zoo_entries({"models": {"mine": spec}})["mine"]


def test_python_model_runs_through_the_segmenter_interface(tmp_path):
    state = build_conv().state_dict()
    torch.save({k: v + 1 for k, v in state.items()}, tmp_path / "w.pt")
    entry = zoo_entries({"models": {"mine": {"family": "user", "framework": "python", "checkpoint":
                                             str(tmp_path / "w.pt"),
                                             "builder": {"_target_": f"{__name__}.build_conv"}}}})["mine"]
    assert entry.config == f"{__name__}.build_conv()"  # names the model (and its arguments) in the results
    assert python_entry(n_classes=4, layout="dict").config == f"{__name__}.build_conv(layout='dict', n_classes=4)"
    segmenter = build_segmenter(entry)
    check_on_batch(segmenter, IMAGES)
    logits, features = segmenter.logits_and_features(IMAGES)
    assert features is None
    reference = ConvModel()
    reference.load_state_dict({k: v + 1 for k, v in state.items()})  # the checkpoint was passed to the builder
    x = torch.from_numpy(IMAGES).permute(0, 3, 1, 2).float() / 255
    expected = torch.nn.functional.interpolate(reference(x), size=(48, 96), mode="bilinear")
    torch.testing.assert_close(logits, expected.detach())
    torch.testing.assert_close(build_segmenter(python_entry(layout="dict")).logits(IMAGES),
                               build_segmenter(python_entry()).logits(IMAGES))


@pytest.mark.parametrize("builder, message", [
    ({"n_classes": 7}, "predicts 7 classes; expected 19 Cityscapes classes"),
    ({"layout": "transposed"}, "returned logits of size 48x24 for an input of 48x96"),
    ({"layout": "pooled"}, "returned logits of size 1x1"),
    ({"fail": True}, "failed on a test batch of 2 image\\(s\\) of 48x96: RuntimeError: CUDA kernel"),
    ({"layout": "nan"}, "non-finite logits"),
])
def test_wrong_models_fail_the_test_batch_with_a_clear_error(builder, message):
    with pytest.raises(ConfigError, match=f"model 'mine'.*{message}"):
        check_on_batch(build_segmenter(python_entry(**builder)), IMAGES)


def test_entry_validation_names_the_key():
    with pytest.raises(ConfigError, match=r"zoo.models.mine.builder._target_` is missing"):
        zoo_entries({"models": {"mine": {"family": "user", "framework": "python"}}})
    with pytest.raises(ConfigError, match="only for framework python"):
        zoo_entries({"models": {"mine": {"family": "u", "config": "c.py", "builder": {"_target_": "x"}}}})
    with pytest.raises(ConfigError, match="building it with `no.such.module` failed"):
        build_segmenter(zoo_entries({"models": {"mine": {"family": "u", "framework": "python",
                                                         "builder": {"_target_": "no.such.module"}}}})["mine"])


def test_label_map_sums_mapped_probabilities_and_renormalises(tmp_path):
    """Against the definition: p19(c) = sum of p(k) over model classes k -> c, divided by the mapped mass."""
    mapping = {"num_classes": 5, "classes": {0: "road", 1: 0, 2: "car", 4: 18}}  # class 3 has no counterpart
    path = tmp_path / "map.json"
    path.write_text(json.dumps(mapping))
    label_map = LabelMap.from_file(path)
    logits = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(1))
    mapped = label_map.apply(logits)
    p = logits.softmax(1)
    mass = p[:, [0, 1, 2, 4]].sum(1)
    expected = torch.zeros(2, NUM_CLASSES, 3, 4)
    expected[:, 0], expected[:, 13], expected[:, 18] = (p[:, 0] + p[:, 1]) / mass, p[:, 2] / mass, p[:, 4] / mass
    torch.testing.assert_close(mapped.softmax(1), expected)
    assert (mapped[:, 1] == MISSING_LOGIT).all()
    for bad, message in (({"num_classes": 5, "classes": {7: "road"}}, "outside 0..4"),
                         ({"num_classes": 5, "classes": {0: "roads"}}, "'roads' is not a Cityscapes class"),
                         ({"classes": {0: 0}}, "expected the keys")):
        with pytest.raises(ConfigError, match=message):
            LabelMap.from_dict(bad, "m.yaml")


def test_python_model_with_another_label_set_needs_and_uses_its_mapping(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("num_classes: 4\nclasses: {0: road, 1: sky, 2: car, 3: car}\n")
    with pytest.raises(ConfigError, match="predicts 4 classes; expected 19 Cityscapes classes.*label_map"):
        check_on_batch(build_segmenter(python_entry(n_classes=4)), IMAGES)
    segmenter = build_segmenter(python_entry(label_map=str(path), n_classes=4))
    check_on_batch(segmenter, IMAGES)
    assert set(segmenter.logits(IMAGES).argmax(1).unique().tolist()) <= {0, 10, 13}
    with pytest.raises(ConfigError, match="predicts 19 classes; expected the 4 of"):
        check_on_batch(build_segmenter(python_entry(label_map=str(path))), IMAGES)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_models")
    return {spec: ensure_tiny_segmenter(spec, root / spec) for spec in ("pspnet_r18", "segformer_hf")}


def test_mmseg_config_and_checkpoint_and_transformers_folder(tiny_models, tmp_path):
    """The two framework entries a user writes on the command line (no `tiny` spec): they run the test batch."""
    psp, hf = tiny_models["pspnet_r18"], tiny_models["segformer_hf"]
    entries = zoo_entries({"models": {
        "mine_mmseg": {"family": "user", "config": str(psp / "config.py"), "checkpoint": str(psp / "checkpoint.pth")},
        "mine_hf": {"family": "user", "framework": "transformers", "config": str(hf)}}})
    for entry in entries.values():
        check_on_batch(build_segmenter(entry), IMAGES)
    path = tmp_path / "map.yaml"
    path.write_text("num_classes: 150\nclasses: {0: road}\n")
    mapped = zoo_entries({"models": {
        "mine_mmseg": {"family": "user", "config": str(psp / "config.py"), "checkpoint": str(psp / "checkpoint.pth"),
                       "label_map": str(path)},
        "mine_hf": {"family": "user", "framework": "transformers", "config": str(hf), "label_map": str(path)}}})
    for key, entry in mapped.items():
        with pytest.raises(ConfigError, match=f"model '{key}' .* predicts 19 classes; expected the 150 of"):
            build_segmenter(entry)
