"""Tiny randomly initialised segmentation models of real zoo families, saved like real ones.

mmseg models are built from the shipped Cityscapes configs with shrunken widths and depths and a small test
scale, then saved as a self-contained `config.py` plus an mmengine-style `checkpoint.pth`
(`{"state_dict", "meta"}`) that loads through the same checkpoint code as the zoo's URLs. The transformers
model is a tiny SegFormer written with `save_pretrained`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch

from synthrel.tiny.real_configs import MMSEG_REAL

log = logging.getLogger(__name__)

TINY_TEST_SCALE = (128, 64)  # (long, short): tiny test images are at most 128 x 64

#: spec -> (shipped mmseg config, overrides merged into it)
MMSEG_SPECS = {
    "segformer_b0": ("segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py", dict(
        model=dict(
            backbone=dict(embed_dims=8, num_heads=[1, 1, 1, 1], num_layers=[1, 1, 1, 1], init_cfg=None),
            decode_head=dict(in_channels=[8, 8, 8, 8], channels=16),
            test_cfg=dict(mode="slide", crop_size=(48, 48), stride=(32, 32))))),
    "dlv3p_r18": ("deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-769x769.py", dict(
        model=dict(
            backbone=dict(stem_channels=8, base_channels=8),
            decode_head=dict(in_channels=64, channels=16, c1_in_channels=8, c1_channels=8),
            auxiliary_head=dict(in_channels=32, channels=8),
            test_cfg=dict(mode="slide", crop_size=(49, 49), stride=(33, 33))))),
    "pspnet_r18": ("pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py", dict(
        model=dict(
            backbone=dict(stem_channels=8, base_channels=8),
            decode_head=dict(in_channels=64, channels=16),
            auxiliary_head=dict(in_channels=32, channels=8)))),
    "ccnet_r18": ("ccnet/ccnet_r50-d8_4xb2-80k_cityscapes-512x1024.py", dict(
        model=dict(
            backbone=dict(depth=18, stem_channels=8, base_channels=8),
            decode_head=dict(in_channels=64, channels=16),
            auxiliary_head=dict(in_channels=32, channels=8)))),
}
TRANSFORMERS_SPECS = ("segformer_hf",)
SPECS = (*MMSEG_SPECS, *TRANSFORMERS_SPECS)
#: real-size specs: the shipped config as it is (synthrel/tiny/real_configs.py MMSEG_REAL), random init
REAL_SPECS = tuple(f"real:{name}" for name in MMSEG_REAL)
CONFIG_FILE = "config.py"
CHECKPOINT_FILE = "checkpoint.pth"


def tiny_mmseg_config(spec: str):
    """The mmengine Config of tiny `spec`: the real config, shrunk, with the tiny test scale."""
    from mmengine.config import Config

    from synthrel.zoo.registry import load_mmseg_config

    base, overrides = MMSEG_SPECS[spec]
    cfg = load_mmseg_config(base)
    cfg.merge_from_dict(overrides)
    cfg.model.pretrained = None
    for step in cfg.test_pipeline:
        if step["type"] == "Resize":
            step["scale"] = TINY_TEST_SCALE
    # the dumped config must stand alone (no _base_), so it loads from any folder
    return Config(cfg.to_dict())


def real_mmseg_config(spec: str):
    """The mmengine Config of `real:<name>`: the shipped config, standalone, without pretrained weights."""
    from mmengine.config import Config

    from synthrel.zoo.registry import load_mmseg_config

    cfg = load_mmseg_config(MMSEG_REAL[spec.removeprefix("real:")])
    cfg.model.pretrained = None
    if cfg.model.get("backbone", {}).get("init_cfg"):
        cfg.model.backbone.init_cfg = None
    return Config(cfg.to_dict())


def ensure_tiny_segmenter(spec: str, out_dir: str | Path, seed: int = 0, device=None) -> Path:
    """Build `spec` (tiny, or `real:<name>` at real size) into `out_dir` unless complete; written to a temporary
    sibling, then renamed."""
    if spec not in SPECS + REAL_SPECS:
        from synthrel.errors import unknown_name

        raise unknown_name("tiny segmentation model", spec, SPECS + REAL_SPECS)
    out_dir = Path(out_dir)
    marker = CHECKPOINT_FILE if spec not in TRANSFORMERS_SPECS else "config.json"
    if (out_dir / marker).is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp"))
    try:
        torch.manual_seed(seed)
        if spec not in TRANSFORMERS_SPECS:
            _write_mmseg(spec, tmp, device)
        else:
            _write_transformers_segformer(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built tiny segmentation model %s in %s", spec, out_dir)
    return out_dir


def _write_mmseg(spec: str, folder: Path, device=None) -> None:
    from synthrel.zoo.mmcv_shim import install

    install()
    from mmseg.apis import init_model

    cfg = real_mmseg_config(spec) if spec in REAL_SPECS else tiny_mmseg_config(spec)
    model = init_model(cfg, checkpoint=None, device=str(device or "cpu"))
    _randomise_norm_stats(model)
    cfg.dump(str(folder / CONFIG_FILE))
    model.cpu()  # host tensors, as in mmseg's released files
    torch.save({"state_dict": model.state_dict(), "meta": {"tiny_spec": spec}}, folder / CHECKPOINT_FILE)


def _randomise_norm_stats(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so that a checkpoint that fails to load shows in the outputs."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


def _write_transformers_segformer(folder: Path) -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    from synthrel.conventions import CLASS_NAMES

    config = SegformerConfig(
        num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1], hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16, num_labels=len(CLASS_NAMES),
        id2label=dict(enumerate(CLASS_NAMES)), label2id={n: i for i, n in enumerate(CLASS_NAMES)},
    )
    model = SegformerForSemanticSegmentation(config).eval()
    _randomise_norm_stats(model)
    torch.nn.init.normal_(model.decode_head.classifier.weight, std=1.0)  # spread logits: varied predictions
    model.save_pretrained(folder)
    SegformerImageProcessor().save_pretrained(folder)
