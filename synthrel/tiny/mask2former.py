"""A tiny randomly initialised Mask2Former (Swin backbone, 19 Cityscapes labels) saved with save_pretrained.

Same classes and folder layout as `facebook/mask2former-swin-base-cityscapes-semantic`, so RbA code loads it
through the same `Mask2FormerForUniversalSegmentation.from_pretrained(folder)` call.
"""

from __future__ import annotations

from pathlib import Path

from synthrel.jobs import atomic_dir

COMPLETE_MARKER = "config.json"


def tiny_mask2former_config():
    from transformers import Mask2FormerConfig, SwinConfig

    from synthrel.conventions import CLASS_NAMES

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


def build_tiny_mask2former(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny model to `out_dir` (kept when already complete) via a temporary sibling and a rename."""
    import torch
    from transformers import Mask2FormerForUniversalSegmentation

    out_dir = Path(out_dir)
    if (out_dir / COMPLETE_MARKER).is_file():
        return out_dir
    with atomic_dir(out_dir) as tmp:
        torch.manual_seed(seed)
        Mask2FormerForUniversalSegmentation(tiny_mask2former_config()).save_pretrained(tmp)
    return out_dir
