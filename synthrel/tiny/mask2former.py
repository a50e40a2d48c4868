"""A tiny randomly initialised Mask2Former (Swin backbone, 19 Cityscapes labels) saved with save_pretrained.

Same classes and folder layout as a Cityscapes-semantic Mask2Former saved with save_pretrained (e.g. an RbA
checkpoint converted by `python -m synthrel.ood_detection.convert ... --out`), so RbA code loads it through the
same `from_pretrained(folder)` call.
"""

from __future__ import annotations

from pathlib import Path

from synthrel.jobs import atomic_dir

COMPLETE_MARKER = "config.json"


def tiny_mask2former_config(size: str = "tiny"):
    from transformers import Mask2FormerConfig, SwinConfig

    from synthrel.conventions import CLASS_NAMES

    labels = dict(num_labels=len(CLASS_NAMES), id2label=dict(enumerate(CLASS_NAMES)),
                  label2id={name: i for i, name in enumerate(CLASS_NAMES)})
    if size == "real":
        from synthrel.tiny.real_configs import MASK2FORMER_SWIN_B

        backbone = SwinConfig(**MASK2FORMER_SWIN_B, out_features=["stage1", "stage2", "stage3", "stage4"])
        return Mask2FormerConfig(backbone_config=backbone, **labels)

    backbone = SwinConfig(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_feedforward_dim=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
        dim_feedforward=64, num_queries=8, train_num_points=256,
        num_labels=len(CLASS_NAMES), id2label=dict(enumerate(CLASS_NAMES)),
        label2id={name: i for i, name in enumerate(CLASS_NAMES)},
    )


def build_tiny_mask2former(out_dir: str | Path, seed: int = 0, size: str = "tiny", device=None) -> Path:
    """Write the tiny model to `out_dir` (kept when already complete) via a temporary sibling and a rename."""
    import torch
    from transformers import Mask2FormerForUniversalSegmentation

    out_dir = Path(out_dir)
    if (out_dir / COMPLETE_MARKER).is_file():
        return out_dir
    with atomic_dir(out_dir) as tmp:
        torch.manual_seed(seed)
        with torch.device(device or "cpu"):
            model = Mask2FormerForUniversalSegmentation(tiny_mask2former_config(size))
        model.save_pretrained(tmp)
    return out_dir


#: The tiny RbA architecture (synthrel.ood_detection.convert fields): RbA's 1dl layout (1 decoder layer,
#: res5-only pixel decoder), small widths.
TINY_RBA_ARCH = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4, pretrain_img_size=64,
                     hidden_dim=32, feature_size=32, mask_dim=32, num_queries=8, dec_layers=2, enc_layers=1,
                     nheads=2, dim_feedforward=64, encoder_feedforward_dim=64, num_feature_levels=1,
                     num_classes=19, train_num_points=256)
RBA_CHECKPOINT, RBA_ARCH = "model_final.pth", "arch.json"


def build_tiny_rba(out_dir: str | Path, seed: int = 0, size: str = "tiny", device=None) -> Path:
    """A tiny random RbA written as RbA releases it: `model_final.pth` (detectron2 key names, {"model": ...})
    and its architecture `arch.json`, so the ood_detection stage loads it through the checkpoint converter."""
    import json

    import torch

    from synthrel.ood_detection.convert import ARCHS, build_model, to_original_state_dict
    from synthrel.tiny.real_configs import RBA_RELEASE

    arch = ARCHS[RBA_RELEASE] if size == "real" else TINY_RBA_ARCH

    out_dir = Path(out_dir)
    if (out_dir / RBA_CHECKPOINT).is_file() and (out_dir / RBA_ARCH).is_file():
        return out_dir
    with atomic_dir(out_dir) as tmp:
        torch.manual_seed(seed)
        with torch.device(device or "cpu"):
            model = build_model(arch)
        # host tensors, as in a released file
        torch.save({"model": to_original_state_dict(model.cpu()), "iteration": 0}, Path(tmp) / RBA_CHECKPOINT)
        (Path(tmp) / RBA_ARCH).write_text(json.dumps(arch, indent=1))
    return out_dir
