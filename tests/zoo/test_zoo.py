"""The paper40 zoo registry, model builds from the shipped configs, and the Segmenter adapters."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from synthrel.errors import ConfigError, WeightsError
from synthrel.tiny.segmentation import ensure_tiny_segmenter
from synthrel.zoo.predictor import build_segmenter
from synthrel.zoo.registry import (
    CONFIG_HELD,
    Inference,
    ZooEntry,
    get_entry,
    inference,
    load_mmseg_config,
    mmseg_inference,
    zoo_entries,
)

CONF = Path(__file__).resolve().parents[2] / "synthrel" / "conf" / "zoo"
PAPER40 = yaml.safe_load((CONF / "paper40.yaml").read_text())
ENTRIES = zoo_entries(PAPER40)
A5_NAMES = (  # supplementary A.5
    "ANN-R101, ANN-R50, APCNet-R101, APCNet-R50, BiSeNetV1-R50, BiSeNetV2-FCN, CCNet-R101, CCNet-R50, ConvNext, "
    "ConvNext-B-In1K, ConvNext-B-In21K, DLV3+ResNet101, DLV3+ResNet18, DLV3+ResNet50, GCNet-R101, GCNet-R50, "
    "ICNet-R101, ICNet-R18, ICNet-R50, MobileNetV3, PSPNet-R101, PSPNet-R18, PSPNet-R50, SETR-MLA, SETR-Naive, "
    "SETR-PUP, SegFormer-B0, SegFormer-B1, SegFormer-B2, SegFormer-B3, SegFormer-B4, SegFormer-B5, "
    "SegFormer-B5-v2, SegFormer-B5-v3, Segmenter, SemFPN-R101, SemFPN-R50, UpperNet-R101, UpperNet-R18, "
    "UpperNet-R50").split(", ")
NEEDS_MMPRETRAIN = {"convnext_l", "convnext_b_in1k", "convnext_b_in21k"}
FAST_BUILDS = ["ccnet_r50", "pspnet_r18", "segformer_b0", "bisenetv2_fcn", "mobilenetv3"]


def test_paper40_lists_the_40_models_of_a5():
    assert PAPER40["name"] == "paper40"
    assert sorted(e.display_name for e in ENTRIES.values()) == sorted(A5_NAMES)
    local = {k for k, e in ENTRIES.items() if e.needs_user_checkpoint}
    assert local == {"segmenter", "segformer_b5_v2", "segformer_b5_v3"} | NEEDS_MMPRETRAIN
    for key, e in ENTRIES.items():
        assert (e.checkpoint is None) == e.needs_user_checkpoint, key
        if e.checkpoint:
            assert e.checkpoint.startswith("https://download.openmmlab.com/mmsegmentation/v0.5/"), key
            assert "cityscapes" in e.checkpoint, key


@pytest.mark.parametrize("key", sorted(ENTRIES))
def test_each_entry_is_tested_as_its_config_says(key):
    """The entry states no test settings: they resolve from its mmseg config, at the paper's Cityscapes scale."""
    e = ENTRIES[key]
    assert not set(CONFIG_HELD) & set(PAPER40["models"][key]), "the mmseg config holds these"
    cfg = load_mmseg_config(e.config)
    test = inference(e)
    assert test == mmseg_inference(cfg) and test.mode in ("whole", "slide")
    if test.mode == "slide":
        assert test.crop_size == tuple(cfg.model.test_cfg.crop_size) and test.stride == tuple(cfg.model.test_cfg.stride)
        assert all(0 < s < c for s, c in zip(test.stride, test.crop_size, strict=True))  # overlapping windows
    else:
        assert test.crop_size is None and test.stride is None
    # the 768/769 crops test at mmseg's 2049 x 1025, the others at 2048 x 1024
    assert test.scale == ((2049, 1025) if test.crop_size in ((769, 769), (768, 768)) else (2048, 1024))
    assert cfg.model.decode_head.num_classes == 19


@pytest.mark.parametrize(("framework", "key"), [("mmseg", "test_mode"), ("mmseg", "crop_size"), ("mmseg", "stride"),
                                                ("mmseg", "test_scale"), ("transformers", "test_mode"),
                                                ("python", "stride")])
def test_an_entry_restating_test_settings_is_refused_naming_the_key(framework, key):
    spec = {"family": "f", "framework": framework, "config": "x.py", key: [8, 8] if key != "test_mode" else "whole"}
    if framework == "python":
        spec["builder"] = {"_target_": "m.build"}
    where = "its config x.py says" if framework == "mmseg" else "run on the whole image"
    with pytest.raises(ConfigError, match=rf"`zoo.models.m.{key}`: .*{where}"):
        zoo_entries({"name": "z", "models": {"m": spec}})
    if framework != "mmseg" or key != "test_scale":
        return
    spec = {"family": "f", "framework": "transformers", "config": "x", "test_scale": [128, 64]}
    assert inference(zoo_entries({"models": {"m": spec}})["m"]) == Inference(scale=(128, 64))


def _build_random(key):
    from synthrel.zoo.mmcv_shim import install

    install()
    from mmseg.apis import init_model

    if key in NEEDS_MMPRETRAIN:
        pytest.importorskip("mmpretrain")
    model = init_model(load_mmseg_config(ENTRIES[key].config, import_custom_modules=True), None, device="cpu")
    assert model.out_channels == 19
    size = 512 if key == "mobilenetv3" else 64  # LR-ASPP pools with a 49x49 kernel at 1/8 resolution
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, size, size), mode="tensor")
    assert out.shape[:2] == (1, 19)


@pytest.mark.parametrize("key", FAST_BUILDS)
def test_fast_builds_with_random_weights(key):
    _build_random(key)


# The heavy architectures (SETR ViT-L, SegFormer-B5, ...) build in CI too: ~80 s on one core.
@pytest.mark.parametrize("key", sorted(set(ENTRIES) - set(FAST_BUILDS)))
def test_every_entry_builds_with_random_weights(key):
    _build_random(key)


def test_user_checkpoint_and_unknown_key_errors():
    with pytest.raises(WeightsError, match=r"zoo.models.segmenter.checkpoint"):
        build_segmenter(ENTRIES["segmenter"])
    with pytest.raises(ConfigError, match=r"unknown zoo model 'segformer_b9'.*valid names: ann_r101"):
        get_entry(PAPER40, "segformer_b9")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinyzoo")
    for spec in ("segformer_b0", "dlv3p_r18", "pspnet_r18", "segformer_hf"):
        ensure_tiny_segmenter(spec, root / spec)
    return root


def _entry(folder, checkpoint=None, **kw):
    return ZooEntry(key="m", family="f", config=str(folder / "config.py"),
                    checkpoint=checkpoint or str(folder / "checkpoint.pth"), **kw)


#: what synthrel/conf/zoo/tiny.yaml stated before its entries read their configs (the evaluation stays identical)
TINY_BEFORE = {"segformer_b0": Inference("slide", (48, 48), (32, 32), (128, 64)),
               "dlv3p_r18": Inference("slide", (49, 49), (33, 33), (128, 64)),
               "pspnet_r18": Inference("whole", scale=(128, 64))}


@pytest.mark.parametrize("spec", sorted(TINY_BEFORE))
def test_tiny_zoo_entries_resolve_what_they_stated_and_the_segmenter_runs_it(tiny_dir, spec):
    entry = _entry(tiny_dir / spec)
    assert inference(entry) == TINY_BEFORE[spec]
    segmenter = build_segmenter(entry)
    assert segmenter.test_scale == TINY_BEFORE[spec].scale
    test_cfg = segmenter.model.test_cfg
    assert test_cfg.get("mode", "whole") == TINY_BEFORE[spec].mode
    if TINY_BEFORE[spec].mode == "slide":
        before = TINY_BEFORE[spec]
        assert (tuple(test_cfg.crop_size), tuple(test_cfg.stride)) == (before.crop_size, before.stride)


@pytest.mark.parametrize("spec", ["segformer_b0", "dlv3p_r18"])  # both slide mode
@pytest.mark.parametrize("shape", [(64, 128), (50, 90)])  # at the test scale, and resized to it
def test_tiny_logits_equal_mmseg_inference_model(tiny_dir, spec, shape):
    from mmseg.apis import inference_model, init_model

    folder = tiny_dir / spec
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = build_segmenter(_entry(folder)).logits(image[None])[0]
    model = init_model(str(folder / "config.py"), str(folder / "checkpoint.pth"), device="cpu")
    ref = inference_model(model, np.ascontiguousarray(image[..., ::-1])).seg_logits.data  # mmseg wants BGR
    assert ours.shape == ref.shape == (19, *shape)
    if shape == (64, 128):  # no resize: identical pipeline
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
        assert torch.equal(ours.argmax(0), ref.argmax(0))
    else:  # cv2 uint8 resize vs rounded torch bilinear: a few values differ by one grey level
        assert (ours - ref).abs().mean() < 1e-2 * ref.abs().mean()
        assert (ours.argmax(0) == ref.argmax(0)).float().mean() > 0.98


def test_checkpoint_loads_from_path_file_url_and_cache(tiny_dir, tmp_path):
    folder = tiny_dir / "pspnet_r18"
    image = np.random.default_rng(1).integers(0, 256, (1, 64, 128, 3), dtype=np.uint8)
    ref = build_segmenter(_entry(folder)).logits(image)
    via_file_url = build_segmenter(_entry(folder, (folder / "checkpoint.pth").as_uri())).logits(image)
    torch.testing.assert_close(via_file_url, ref)
    cache = tmp_path / "cache"
    (cache / "checkpoints").mkdir(parents=True)
    shutil.copy(folder / "checkpoint.pth", cache / "checkpoints" / "tiny_psp_20240101-abcdef12.pth")
    url = "https://download.openmmlab.com/mmsegmentation/v0.5/x/tiny_psp_20240101-abcdef12.pth"  # offline: cache
    via_cache = build_segmenter(_entry(folder, url), cache_dir=cache).logits(image)
    torch.testing.assert_close(via_cache, ref)


def test_mismatched_checkpoint_names_model_and_parameter(tiny_dir, tmp_path):
    psp = tiny_dir / "pspnet_r18"
    with pytest.raises(WeightsError, match=r"model 'm'.*parameter 'decode_head\.\S+' is missing"):
        build_segmenter(_entry(psp, str(tiny_dir / "dlv3p_r18" / "checkpoint.pth")))
    state = torch.load(psp / "checkpoint.pth", weights_only=False)
    state["state_dict"]["decode_head.conv_seg.weight"] = torch.zeros(5, 16, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"'decode_head.conv_seg.weight' has shape \(5, 16, 1, 1\)"):
        build_segmenter(_entry(psp, str(tmp_path / "bad.pth")))
    with pytest.raises(WeightsError, match="not found"):
        build_segmenter(_entry(psp, str(tmp_path / "missing.pth")))


def test_transformers_segformer_matches_its_own_processor_and_forward(tiny_dir):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    folder = tiny_dir / "segformer_hf"
    entry = ZooEntry(key="hf", family="SegFormer", framework="transformers", config=str(folder), checkpoint=None)
    image = np.random.default_rng(2).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)
    ours, feats = build_segmenter(entry).logits_and_features(image, features="whole")
    proc = AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
    pixels = proc(list(image), do_resize=False, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    ref = torch.nn.functional.interpolate(out.logits, size=(64, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    summed = out.hidden_states[-1].sum(dim=(2, 3))
    torch.testing.assert_close(feats, summed / summed.max(1, keepdim=True).values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", ["segformer_b0", "dlv3p_r18"])  # both slide mode
def test_feature_modes_equal_backbone_passes_on_the_whole_image_and_on_each_window(tiny_dir, spec):
    from mmseg.apis import init_model

    folder = tiny_dir / spec
    images = np.random.default_rng(3).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)  # the test scale
    segmenter = build_segmenter(_entry(folder), window_batch=3)  # chunks cut across windows and images
    logits_none, none = segmenter.logits_and_features(images, features=None)
    logits_whole, whole = segmenter.logits_and_features(images, features="whole")
    logits_windows, windows = segmenter.logits_and_features(images, features="windows")
    assert none is None
    torch.testing.assert_close(logits_whole, logits_none)
    torch.testing.assert_close(logits_windows, logits_none)

    model = init_model(str(folder / "config.py"), str(folder / "checkpoint.pth"), device="cpu")
    x = model.data_preprocessor({"inputs": [torch.from_numpy(im[..., ::-1].copy()).permute(2, 0, 1)
                                            for im in images]}, False)["inputs"]
    (h_crop, w_crop), (h_stride, w_stride) = model.test_cfg.crop_size, model.test_cfg.stride
    height, width = x.shape[-2:]
    crops = []  # mmseg's slide_inference loop, written out
    for h_idx in range(max(height - h_crop + h_stride - 1, 0) // h_stride + 1):
        for w_idx in range(max(width - w_crop + w_stride - 1, 0) // w_stride + 1):
            y2, x2 = min(h_idx * h_stride + h_crop, height), min(w_idx * w_stride + w_crop, width)
            crops.append(x[:, :, max(y2 - h_crop, 0):y2, max(x2 - w_crop, 0):x2])
    assert len(crops) > 1
    with torch.no_grad():
        ref_whole = model.backbone(x)[-1].double().sum(dim=(2, 3))
        ref_windows = sum(model.backbone(c)[-1].double().sum(dim=(2, 3)) for c in crops)
    for ours, ref in ((whole, ref_whole), (windows, ref_windows)):
        ref = ref / ref.max(dim=1, keepdim=True).values
        torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(whole, windows, atol=1e-3)  # two different definitions, both documented
    with pytest.raises(ConfigError, match="`features` is 'pooled'"):
        segmenter.logits_and_features(images, features="pooled")
