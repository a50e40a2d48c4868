"""benchmarks/flops.py's counts of the budget rows it added (#36 item 1), against independent references: hand
formulas written out here (2 FLOPs per multiply-add), published multiply-add figures, and generate's own count.

Published vision figures count multiply-adds (fvcore's convention, called "FLOPs" in those papers): x 2 here."""

import json

import pytest
import torch

from benchmarks.flops import blip_parts, count


def blip_decoder_by_hand(beams: int, new_tokens: int, image_tokens: int = 577) -> int:
    """BLIP-large's text decoder (BERT-base, 12 layers of width 768, cross-attention to 1024-wide image tokens,
    vocabulary 30,524) generating `new_tokens` over `beams` beams with a KV cache; the cross-attention keys and
    values of the image are projected at the first token only."""
    b, d, ffn, vocab, enc = beams, 768, 3072, 30524, 1024
    macs = 0
    for length in range(1, new_tokens + 1):  # the cache holds `length` tokens, the new one included
        layer = (4 * b * d * d + 2 * b * length * d  # self-attention: q, k, v, out; q @ K, P @ V
                 + 2 * b * d * d + 2 * b * image_tokens * d  # cross-attention: q, out; q @ K, P @ V
                 + (2 * b * image_tokens * enc * d if length == 1 else 0)  # image keys and values, once
                 + 2 * b * d * ffn)
        macs += 12 * layer + b * d * d + b * d * vocab  # + the LM head (transform, vocabulary)
    return 2 * macs


def vit_by_hand(tokens: int, patches: int, width: int, layers: int, mlp: int, patch_pixels: int) -> int:
    """A plain ViT (BLIP's ViT-L/16): patch embedding, then per layer qkv, q @ K, P @ V, out, MLP."""
    per_layer = tokens * width * 3 * width + 2 * tokens * tokens * width + tokens * width * width + 2 * tokens * width * mlp
    return 2 * (patches * width * patch_pixels + layers * per_layer)


def sam_vit_h_by_hand() -> int:
    """SAM ViT-H's image encoder at 1024 px: 64x64 tokens of width 1280, 16 heads, 32 layers of which 4 global
    (7, 15, 23, 31) and 28 in 14x14 windows (the grid padded to 70x70: 25 windows); decomposed relative positions
    (two einsums per attention); MLP 5120 on the unpadded tokens; neck 1x1 conv to 256 and 3x3 conv."""
    d, mlp, heads, head_dim, tokens = 1280, 5120, 16, 80, 64 * 64
    patch = tokens * d * 3 * 16 * 16
    mlp_macs = 2 * tokens * d * mlp
    padded, windows, w = 25 * 14 * 14, 25, 14
    windowed = (padded * d * 3 * d + windows * heads * 2 * (w * w) ** 2 * head_dim
                + windows * heads * 2 * w * w * w * head_dim + padded * d * d + mlp_macs)
    global_ = (tokens * d * 3 * d + heads * 2 * tokens * tokens * head_dim + heads * 2 * 64 * 64 * 64 * head_dim
               + tokens * d * d + mlp_macs)
    neck = tokens * d * 256 + tokens * 256 * 256 * 9
    return 2 * (patch + 28 * windowed + 4 * global_ + neck)


def test_blip_parts_equal_generate_on_the_tiny_blip(tmp_path):
    """The caption count's decomposition (vision once + one decoder call per new token over the beams) against
    generate's own count, beam search run to max_new_tokens (min_new_tokens = max_new_tokens)."""
    from transformers import BlipForConditionalGeneration

    from synthrel.tiny.blip import build_tiny_blip

    model = BlipForConditionalGeneration.from_pretrained(build_tiny_blip(tmp_path / "blip")).eval()
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        generated = count(lambda: model.generate(pixel_values=pixels, num_beams=8, min_new_tokens=12,
                                                 max_new_tokens=12))
    assert sum(blip_parts(model, pixels, 8, 12)) == generated


def test_blip_large_vision_and_decoder_by_hand():
    from transformers import BlipConfig, BlipForConditionalGeneration

    from synthrel.tiny.real_configs import BLIP_LARGE, BLIP_VOCAB

    config = BlipConfig(**{**BLIP_LARGE, "text_config": {**BLIP_LARGE["text_config"], "vocab_size": BLIP_VOCAB}})
    with torch.device("meta"):
        model = BlipForConditionalGeneration(config).eval().requires_grad_(False)
        vision, decoder = blip_parts(model, torch.randn(1, 3, 384, 384), 8, 3)
    assert vision == vit_by_hand(tokens=577, patches=576, width=1024, layers=24, mlp=4096, patch_pixels=3 * 16 * 16)
    assert decoder == blip_decoder_by_hand(8, 3)


def test_sam_vit_h_encoder_by_hand_and_published():
    from transformers import SamConfig, SamModel, SamVisionConfig

    from synthrel.tiny.real_configs import SAM_VIT_H

    with torch.device("meta"):
        sam = SamModel(SamConfig(vision_config=SamVisionConfig(**SAM_VIT_H))).eval().requires_grad_(False)
        with torch.no_grad():
            encoder = count(lambda: sam.get_image_embeddings(torch.zeros(1, 3, 1024, 1024)))
    assert encoder == sam_vit_h_by_hand()
    # SAM (Kirillov et al. 2023) / EfficientSAM (Xiong et al. 2024, Table 1): ViT-H ~2.9-3.0 T multiply-adds
    assert 2 * 2.9e12 <= encoder <= 2 * 3.0e12


def test_fid_inception_matches_the_published_figure():
    from benchmarks.flops import fid

    # torchvision's model table: Inception_V3_Weights at 299x299, 5.71 G multiply-adds ("GFLOPS")
    assert fid()["image"] * 1e12 == pytest.approx(2 * 5.71e9, rel=0.01)


def test_swin_backbones_match_the_published_figures():
    """The backbones of the RbA Mask2Formers and of Grounding DINO tiny (Liu et al. 2021, Swin, Table 1:
    Swin-B at 384 with window 12, 47.0 G multiply-adds; Swin-L 103.9 G; Swin-T at 224, window 7, 4.5 G)."""
    from transformers import GroundingDinoConfig, SwinConfig, SwinModel

    from benchmarks.stage_throughput import mask2former_config
    from synthrel.tiny.real_configs import GROUNDING_DINO_TINY

    def swin(backbone, size):
        config = SwinConfig(embed_dim=backbone.embed_dim, depths=backbone.depths, num_heads=backbone.num_heads,
                            window_size=backbone.window_size, image_size=size)
        with torch.device("meta"), torch.no_grad():
            model = SwinModel(config).eval()
            return count(lambda: model(torch.zeros(1, 3, size, size)))

    assert swin(mask2former_config("rba_swin_b", tiny=False).backbone_config, 384) == pytest.approx(94.0e9, rel=0.01)
    assert swin(mask2former_config("rba_swin_l", tiny=False).backbone_config, 384) == pytest.approx(207.8e9, rel=0.01)
    assert swin(GroundingDinoConfig(**GROUNDING_DINO_TINY).backbone_config, 224) == pytest.approx(9.0e9, rel=0.01)


def test_rba_step_count_is_linear_in_the_batch():
    """flops.rba counts one image of the batch-16 step and multiplies: two copies of an image cost twice one."""
    from benchmarks.flops import rba_step
    from benchmarks.stage_throughput import RBA_TINY, mask2former_config, rba_batch
    from synthrel.ood_detection.convert import rba_model_class

    torch.manual_seed(0)
    model = rba_model_class()(mask2former_config("rba_swin_b", tiny=True))
    one = rba_batch(1, *RBA_TINY[1])
    two = {k: torch.cat([v, v]) for k, v in one.items()}
    single = rba_step(model, one)
    assert single > 0 and rba_step(model, two) == 2 * single


def test_the_committed_counts_match_the_hand_formulas():
    """docs/bench_results/flops.json, which the budget reads, holds the counts the formulas above give."""
    from benchmarks.budget import FLOPS
    from benchmarks.flops import caption_settings

    flops = json.loads(FLOPS.read_text())
    settings = caption_settings()
    assert flops["caption"]["num_beams"] == settings["num_beams"] == 8
    vision = vit_by_hand(tokens=577, patches=576, width=1024, layers=24, mlp=4096, patch_pixels=3 * 16 * 16)
    decoder = blip_decoder_by_hand(settings["num_beams"], settings["max_new_tokens"])
    assert flops["caption"]["image"] * 1e12 == pytest.approx(vision + decoder, rel=1e-9)
    # segment: the encoder and SAM's small prompt encoder and mask decoder (< 1 %)
    assert flops["grounded_sam"]["segment"] * 1e12 == pytest.approx(sam_vit_h_by_hand(), rel=0.01)
    assert flops["grounded_sam"]["image"] > flops["grounded_sam"]["segment"]
    for name in ("swin_b", "swin_l"):  # 16 crops of 512x1024 are 4 scored 1024x2048 images, and the loss more
        for head, rba in flops["rba"][name].items():
            assert 4 * rba["predict_image"] < rba["train_step"] < 4.5 * rba["predict_image"], (name, head)


def test_the_committed_rba_counts_are_by_the_benchmarks_heads():
    """flops.json counts RbA on the head the throughput benchmark measures (RbA's released one, the stage's) and
    on transformers' default (the JSONs without a head), each with the layer counts of its config; the released
    head, with fewer decoder layers and feature levels, costs less."""
    from transformers import Mask2FormerConfig

    from benchmarks.budget import FLOPS
    from benchmarks.stage_throughput import RBA_DEFAULT_HEAD, RBA_HEADS, mask2former_config

    flops = json.loads(FLOPS.read_text())["rba"]
    default = Mask2FormerConfig()
    for stage, head in RBA_HEADS.items():
        counted = flops[stage.removeprefix("rba_")]
        assert sorted(counted) == sorted([head, RBA_DEFAULT_HEAD])
        released = mask2former_config(stage, tiny=False)
        for name, config, levels in ((head, released, released.num_feature_levels), (RBA_DEFAULT_HEAD, default, 3)):
            assert (counted[name]["encoder_layers"], counted[name]["decoder_layers"], counted[name]["feature_levels"]
                    ) == (config.encoder_layers, config.decoder_layers, levels), (stage, name)
        for unit in ("train_step", "predict_image"):
            assert counted[head][unit] < counted[RBA_DEFAULT_HEAD][unit], (stage, unit)
