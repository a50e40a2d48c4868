"""train_zoo: tiny zoo models trained on demo data learn, load through the zoo's loader, resume and repeat."""

import json
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from synthrel.conventions import NUM_CLASSES
from synthrel.data.cityscapes import CityscapesDataset
from synthrel.data.demo import DemoDataJob
from synthrel.errors import ConfigError, WeightsError
from synthrel.metrics.segmentation import mean_iou
from synthrel.tiny.segmentation import ensure_tiny_segmenter
from synthrel.zoo.predictor import build_segmenter
from synthrel.zoo.registry import zoo_entries
from synthrel.zoo.training import RECORD_FILE, TrainZooJob, model_folder

TRAINED_STEPS = 60


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    DemoDataJob(root=str(root), seed=0, n_train=12, n_val=6, n_shift=1, n_ood=1).run()
    return root / "cityscapes"


def _entry(folder, spec, framework="mmseg"):
    if framework == "transformers":
        return {"family": "SegFormer", "framework": "transformers", "config": str(folder), "checkpoint": None,
                "test_scale": [128, 64]}
    return {"family": spec, "framework": "mmseg", "config": str(folder / "config.py"),
            "checkpoint": str(folder / "checkpoint.pth")}


def _job(root, demo_root, steps, models, **kwargs):
    """train_zoo on plain zoo entries, each from the seeded tiny init of its spec under root/init/<spec>."""
    seed = kwargs.pop("seed", 0)
    zoo = {"name": "t", "models": {k: _entry(root / k, spec, fw) for k, (spec, fw) in models.items()}}
    init = {k: str(ensure_tiny_segmenter(spec, root / f"init{seed}" / spec, seed=seed))
            for k, (spec, _) in models.items()}
    dataset = {"_target_": "synthrel.data.cityscapes.CityscapesDataset", "root": str(demo_root)}
    return TrainZooJob(zoo=zoo, dataset=dataset, steps=steps, init=init, batch_size=4, lr=5e-3, seed=seed,
                       device="cpu", **kwargs)


MODELS = {"psp_init": ("pspnet_r18", "mmseg"), "psp": ("pspnet_r18", "mmseg"),
          "hf_init": ("segformer_hf", "transformers"), "hf": ("segformer_hf", "transformers")}
STEPS = {"psp_init": 0, "psp": TRAINED_STEPS, "hf_init": 0, "hf": TRAINED_STEPS}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_root):
    root = tmp_path_factory.mktemp("zoo")
    job = _job(root, demo_root, STEPS, MODELS)
    summary = job.run()
    return root, job, summary


def _val_miou(entry, demo_root) -> float:
    """mIoU of argmax predictions on the demo val split, pooled with sklearn's confusion matrix."""
    segmenter = build_segmenter(entry, "cpu")
    val = CityscapesDataset(demo_root, split="val")
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for i in range(len(val)):
        sample = val[i]
        pred = segmenter.logits(sample["image"][None]).argmax(1)[0].numpy()
        valid = sample["label"] != 255
        cm += confusion_matrix(sample["label"][valid], pred[valid], labels=range(NUM_CLASSES))
    return mean_iou(cm)


def test_training_loss_falls(trained):
    root, job, summary = trained
    assert sorted(summary["trained"]) == sorted(MODELS) and summary["skipped"] == []
    for key in ("psp", "hf"):
        record = json.loads((model_folder(job.entries[key]) / RECORD_FILE).read_text())
        assert record["params"]["steps"] == TRAINED_STEPS and record["params"]["seed"] == 0
        assert record["params"]["data"]["n_images"] == 12 and record["params"]["data"]["split"] == "train"
        assert record["final_loss"] < 0.6 * record["first_loss"], record


@pytest.mark.parametrize("arch", ["psp", "hf"])
def test_trained_model_beats_its_random_init_on_val(trained, demo_root, arch):
    root, job, _ = trained
    random_init = _val_miou(job.entries[f"{arch}_init"], demo_root)
    learned = _val_miou(job.entries[arch], demo_root)
    assert random_init < 0.05
    assert learned > random_init + 0.07, (random_init, learned)


def test_trained_checkpoint_is_what_mmseg_and_the_zoo_loader_read(trained):
    """The zoo loader and mmseg's own init_model read the same trained tensors, unlike the random init."""
    from synthrel.zoo.mmcv_shim import install

    install()
    from mmseg.apis import init_model

    root, job, _ = trained
    entry = job.entries["psp"]
    loaded = build_segmenter(entry, "cpu").model.state_dict()
    reference = init_model(entry.config, entry.checkpoint, device="cpu").state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in loaded)
    fresh = ensure_tiny_segmenter("pspnet_r18", root / "fresh_init", seed=0)
    init = torch.load(fresh / "checkpoint.pth", map_location="cpu", weights_only=False)["state_dict"]
    conv = "decode_head.conv_seg.weight"
    assert not torch.equal(loaded[conv], init[conv])
    untrained = build_segmenter(job.entries["psp_init"], "cpu").model.state_dict()
    assert torch.equal(untrained[conv], init[conv])  # 0 steps: the seeded random init itself


def test_finished_models_are_skipped_unless_settings_change_or_force(trained, demo_root):
    root, job, _ = trained
    stamps = {k: (model_folder(e) / RECORD_FILE).stat().st_mtime_ns for k, e in job.entries.items()}
    again = _job(root, demo_root, STEPS, MODELS).run()
    assert again["trained"] == [] and sorted(again["skipped"]) == sorted(MODELS)
    assert stamps == {k: (model_folder(e) / RECORD_FILE).stat().st_mtime_ns for k, e in job.entries.items()}
    changed = _job(root, demo_root, {**STEPS, "hf_init": 0, "psp_init": 2}, MODELS).run()
    assert changed["trained"] == ["psp_init"]
    forced = _job(root, demo_root, {"psp_init": 0}, {"psp_init": MODELS["psp_init"]}, force=True)
    assert forced.run()["trained"] == ["psp_init"]


def _weights(folder, framework):
    if framework == "mmseg":
        return torch.load(folder / "checkpoint.pth", map_location="cpu", weights_only=False)["state_dict"]
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_same_seed_gives_identical_checkpoints(tmp_path, demo_root):
    models = {"psp": MODELS["psp"], "hf": MODELS["hf"]}
    steps = {"psp": 8, "hf": 8}
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        _job(tmp_path / name, demo_root, steps, models, seed=seed).run()
        runs[name] = {k: _weights(tmp_path / name / k, fw) for k, (_, fw) in models.items()}
    for key in models:
        a, b, c = (runs[n][key] for n in "abc")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), key
        assert not all(torch.equal(a[k], c[k]) for k in a), key


def test_stage_config_budgets_every_tiny_model_with_spread(compose_cfg, tmp_path):
    cfg = compose_cfg("profile=tiny", "+stage=[tiny_models,train_zoo]", f"paths.data_dir={tmp_path}/data")
    job = hydra.utils.instantiate(cfg.stages.train_zoo, _convert_="all")
    assert job.dataset["root"] == f"{tmp_path}/data/cityscapes" and job.split == "train"
    assert set(job.steps) == set(job.entries) == set(job.init) == set(zoo_entries(job.zoo))
    budgets = [job.steps[k] for k in job.entries]
    assert len(job.entries) >= 6 and len(set(budgets)) >= 5
    by_init = {}
    for key in job.entries:
        by_init.setdefault(job.init[key], set()).add(job.steps[key])
    assert any(len(b) >= 2 for b in by_init.values())  # one architecture at two budgets
    # the tiny_models stage writes every folder the zoo, the inits and the forecast's model point to
    models_dir = Path(cfg.profile.models_dir)
    written = {str(models_dir / folder) for folder in cfg.stages.tiny_models.segmenters}
    for key, entry in job.entries.items():
        assert str(model_folder(entry)) in written and job.init[key] in written, key
    unseen = compose_cfg("profile=tiny", "model=tiny_unseen")
    assert str(Path(unseen.model.checkpoint).parent) in {str(Path(unseen.profile.models_dir) / f)
                                                        for f in cfg.stages.tiny_models.segmenters}


def test_budget_errors_name_the_config_key(tmp_path, demo_root):
    with pytest.raises(ConfigError, match=r"stages\.train_zoo\.steps.*psp"):
        _job(tmp_path, demo_root, {}, {"psp": MODELS["psp"]})
    with pytest.raises(ConfigError, match=r"stages\.train_zoo\.steps\.nope.*valid: psp"):
        _job(tmp_path, demo_root, {"psp": 1, "nope": 1}, {"psp": MODELS["psp"]})
    with pytest.raises(ConfigError, match=r"stages\.train_zoo\.steps\.psp"):
        _job(tmp_path, demo_root, {"psp": -1}, {"psp": MODELS["psp"]})


def test_models_without_an_init_are_left_alone(tmp_path, demo_root):
    zoo = {"name": "p", "models": {"real": {"family": "PSPNet", "config": "x.py", "checkpoint": "y.pth"}}}
    job = TrainZooJob(zoo=zoo, dataset={"_target_": "x"}, steps={}, device="cpu")
    assert job.run() == {"trained": [], "skipped": [], "not_trained": ["real"]}


def test_missing_init_names_the_key_and_the_tiny_models_stage(tmp_path, demo_root):
    zoo = {"name": "t", "models": {"psp": _entry(tmp_path / "psp", "pspnet_r18")}}
    job = TrainZooJob(zoo=zoo, dataset={"_target_": "synthrel.data.cityscapes.CityscapesDataset",
                                        "root": str(demo_root)},
                      steps={"psp": 1}, init={"psp": str(tmp_path / "nowhere")}, device="cpu")
    with pytest.raises(WeightsError, match=r"stages\.train_zoo\.init\.psp.*tiny_models"):
        job.run()
    with pytest.raises(ConfigError, match=r"nope.*stages\.train_zoo\.init.*valid names: psp"):
        TrainZooJob(zoo=zoo, dataset={"_target_": "x"}, steps={}, init={"nope": "x"}, device="cpu")


@pytest.mark.slow
def test_default_stage_spreads_the_demo_zoo(compose_cfg, tmp_path):
    """The real stage config on the default demo data: every model learns, to clearly different mIoU."""
    cfg = compose_cfg("profile=tiny", "+stage=[tiny_models,demo_data,train_zoo]", "device=cpu",
                      f"paths.output_root={tmp_path}")
    for folder, spec in cfg.stages.tiny_models.segmenters.items():  # the inits the stage writes (not SD and co.)
        if folder.startswith("init/"):
            ensure_tiny_segmenter(spec, Path(cfg.profile.models_dir) / folder, seed=cfg.seed)
    hydra.utils.instantiate(cfg.stages.demo_data, _convert_="all").run()
    job = hydra.utils.instantiate(cfg.stages.train_zoo, _convert_="all")
    assert sorted(job.run()["trained"]) == sorted(job.entries)
    scores = {k: _val_miou(e, f"{tmp_path}/tiny/data/cityscapes") for k, e in job.entries.items()}
    assert min(scores.values()) > 0.05, scores
    assert max(scores.values()) - min(scores.values()) > 0.08, scores
    assert scores["segformer_b0"] > scores["segformer_b0_s20"] + 0.05, scores
