"""Tiny randomly initialised Grounding DINO and SAM of the real transformers architectures, saved as folders.

They load through the same `from_pretrained(folder)` path as IDEA-Research/grounding-dino-tiny and
facebook/sam-vit-huge. Their detections are arbitrary: tests steer accept/reject through the thresholds.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path

from synthrel.jobs import atomic_dir

log = logging.getLogger(__name__)

COMPLETE_MARKER = "config.json"
#: Ids that transformers' Grounding DINO hard-codes for bert-base-uncased: [CLS], [SEP], '.', '?'.
CLS_ID, SEP_ID, PERIOD_ID, QUESTION_ID = 101, 102, 1012, 1029
#: bert-base-uncased puts these 31 characters at ids 999..1029 ('.' at 1012, '?' at 1029).
PUNCTUATION_AND_DIGITS = string.punctuation[:15] + string.digits + string.punctuation[15:21]
TINY_WORDS = ("a", "an", "of", "the", "photo")


def bert_vocab() -> list[str]:
    """A WordPiece vocabulary with bert-base-uncased's special-token ids in place.

    Lowercase letters and their '##' continuations let any lowercase object name tokenize without [UNK].
    """
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"[unused{i}]" for i in range(99, 99 + 999 - len(vocab))]
    vocab += list(PUNCTUATION_AND_DIGITS)
    vocab += list(string.ascii_lowercase) + [f"##{c}" for c in string.ascii_lowercase]
    vocab += [w for w in TINY_WORDS if w not in vocab]
    assert [vocab[i] for i in (CLS_ID, SEP_ID, PERIOD_ID, QUESTION_ID)] == ["[CLS]", "[SEP]", ".", "?"]
    return vocab


def build_tiny_grounding_dino(out_dir: str | Path, seed: int = 0, size: str = "tiny", device=None) -> Path:
    """Grounding DINO (tiny: Swin embed 32, 1-layer BERT, d_model 64, 2 decoder layers, 50 queries; real:
    grounding-dino-tiny), processor."""

    def build(tmp: Path):
        import torch
        from transformers import (
            BertTokenizer,
            GroundingDinoConfig,
            GroundingDinoForObjectDetection,
            GroundingDinoImageProcessorPil,
            GroundingDinoProcessor,
        )

        vocab = bert_vocab()
        if size == "real":
            from synthrel.tiny.real_configs import BERT_VOCAB

            vocab += [f"w{i}" for i in range(BERT_VOCAB - len(vocab))]
        (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        tokenizer = BertTokenizer.from_pretrained(tmp, do_lower_case=True)
        torch.manual_seed(seed)
        if size == "real":
            from synthrel.tiny.real_configs import GROUNDING_DINO_SIZE, GROUNDING_DINO_TINY

            config, image_size = GroundingDinoConfig(**GROUNDING_DINO_TINY), GROUNDING_DINO_SIZE
        else:
            config, image_size = _tiny_dino_config(len(vocab)), {"shortest_edge": 96, "longest_edge": 160}
        with torch.device(device or "cpu"):
            model = GroundingDinoForObjectDetection(config).eval()
        processor = GroundingDinoProcessor(GroundingDinoImageProcessorPil(size=image_size), tokenizer)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    return _build_folder(out_dir, build, "Grounding DINO")


def _tiny_dino_config(vocab_size: int):
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    return GroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
                                   window_size=7, out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=37),
        d_model=64, encoder_layers=1, decoder_layers=2,  # 1 decoder layer breaks tie_weights
        encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2,
        num_queries=50, disable_custom_kernels=True,
    )


def build_tiny_sam(out_dir: str | Path, seed: int = 0, size: str = "tiny", device=None) -> Path:
    """SAM (tiny: a 2-layer ViT encoder of width 32 on 128-px inputs; real: sam-vit-huge) + its processor."""

    def build(tmp: Path):
        import torch
        from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor, SamVisionConfig

        torch.manual_seed(seed)
        if size == "real":
            from synthrel.tiny.real_configs import SAM_IMAGE_SIZE, SAM_VIT_H

            image_size, config = SAM_IMAGE_SIZE, SamConfig(vision_config=SamVisionConfig(**SAM_VIT_H))
        else:
            image_size, config = 128, _tiny_sam_config()
        processor = SamProcessor(SamImageProcessorPil(size={"longest_edge": image_size},
                                                      pad_size={"height": image_size, "width": image_size}))
        with torch.device(device or "cpu"):
            model = SamModel(config).eval()
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    return _build_folder(out_dir, build, "SAM")


def _tiny_sam_config():
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    image_size, patch_size, width = 128, 16, 32
    return SamConfig(
        vision_config=SamVisionConfig(hidden_size=width, output_channels=width, num_hidden_layers=2,
                                      num_attention_heads=2, image_size=image_size, patch_size=patch_size,
                                      window_size=4, global_attn_indexes=[1], num_pos_feats=width // 2,
                                      mlp_dim=2 * width),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=width, image_size=image_size,
                                                     patch_size=patch_size),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=width, mlp_dim=2 * width,
                                                 num_attention_heads=2, iou_head_hidden_dim=width),
    )


def build_tiny_grounded_sam(models_dir: str | Path, seed: int = 0, size: str = "tiny",
                            device=None) -> dict[str, Path]:
    """models_dir/{grounding_dino, sam}, the folders the tiny (smoke) profile points the inpaint stage to."""
    models_dir = Path(models_dir)
    return {"grounding_dino": build_tiny_grounding_dino(models_dir / "grounding_dino", seed, size, device),
            "sam": build_tiny_sam(models_dir / "sam", seed, size, device)}


def _build_folder(out_dir: str | Path, build, what: str) -> Path:
    """Build into a temporary sibling and rename it into place, so a kill never leaves a half folder."""
    out_dir = Path(out_dir)
    if (out_dir / COMPLETE_MARKER).is_file():
        return out_dir
    with atomic_dir(out_dir) as tmp:
        build(tmp)
    log.info("built tiny %s in %s", what, out_dir)
    return out_dir
