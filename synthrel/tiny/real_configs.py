"""The paper's architectures at real size: the config values of the hub models, written out (nothing downloaded).

The tiny_models stage builds them with random weights when `size: real` (the smoke profile,
synthrel/conf/profile/smoke.yaml); the tiny sizes live beside each builder. Values from each hub repo's
config.json: stable-diffusion-v1-5/stable-diffusion-v1-5 (+ -inpainting), stabilityai/stable-diffusion-xl-base-1.0,
openai/clip-vit-large-patch14, laion/CLIP-ViT-bigG-14-laion2B-39B-b160k, Salesforce/blip-image-captioning-large,
IDEA-Research/grounding-dino-tiny (transformers' GroundingDinoConfig defaults), facebook/sam-vit-huge, the
Mask2Former Swin-B Cityscapes-semantic release (RbA's base), and mmseg's shipped Cityscapes configs.
"""

from __future__ import annotations

from typing import Literal, get_args

Size = Literal["tiny", "real"]
SIZES = get_args(Size)

#: CLIP's BPE vocabulary size (the local tokenizer knows fewer tokens; the embedding table has the real rows)
CLIP_VOCAB = 49408

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
#: stable-diffusion-inpainting: the SD1.5 UNet with 9 input channels (latent, mask, masked-image latent)
SD15_INPAINT_UNET = dict(SD15_UNET, in_channels=9)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32)  # 2816 = bigG projection 1280 + 6 time ids x 256
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=512, scaling_factor=0.18215)
SDXL_VAE = dict(SD_VAE, sample_size=1024, scaling_factor=0.13025)
UNETS = {"sd15": SD15_UNET, "sd15_inpaint": SD15_INPAINT_UNET, "sdxl": SDXL_UNET}
VAES = {"sd15": SD_VAE, "sd15_inpaint": SD_VAE, "sdxl": SDXL_VAE}

#: CLIP ViT-L/14 text tower (SD1.5's text encoder, SDXL's first)
CLIP_L_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
#: OpenCLIP ViT-bigG/14 text tower (SDXL's text_encoder_2, with projection)
CLIP_G_TEXT = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                   max_position_embeddings=77, projection_dim=1280, hidden_act="gelu")

#: BLIP captioning large: ViT-L/16 at 384 px, BERT-base decoder (vocab_size and token ids set by the builder)
BLIP_LARGE = dict(
    text_config=dict(hidden_size=768, encoder_hidden_size=1024, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=512),
    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=384, patch_size=16),
    projection_dim=512)
BLIP_VOCAB = 30524
BLIP_IMAGE_SIZE = 384

#: grounding-dino-tiny is transformers' GroundingDinoConfig default (Swin-T, BERT-base, d_model 256, 6 + 6 layers,
#: 900 queries); only the text vocabulary (bert-base-uncased, 30522) is set, and PyTorch deformable attention
GROUNDING_DINO_TINY = dict(disable_custom_kernels=True)
BERT_VOCAB = 30522
#: the processor's resize of grounding-dino-tiny's preprocessor_config.json
GROUNDING_DINO_SIZE = {"shortest_edge": 800, "longest_edge": 1333}
#: facebook/sam-vit-huge's image encoder (prompt encoder and mask decoder: SamConfig's defaults), 1024-px input
SAM_VIT_H = dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31])
SAM_IMAGE_SIZE = 1024

#: Mask2Former Swin-B Cityscapes-semantic (the hub release RbA starts from): Swin-B at window 12 (pretrained at 384), 100 queries
MASK2FORMER_SWIN_B = dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
                          image_size=384, drop_path_rate=0.3)
#: RbA's release (synthrel.ood_detection.convert.ARCHS)
RBA_RELEASE = "swin_b_1dl"

#: real-size segmentation models: spec -> shipped mmseg config (the paper zoo's, synthrel/conf/zoo/paper40.yaml)
MMSEG_REAL = {
    "segformer_b5": "segformer/segformer_mit-b5_8xb1-160k_cityscapes-1024x1024.py",
    "pspnet_r18": "pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-769x769.py",
    "dlv3p_r101": "deeplabv3plus/deeplabv3plus_r101-d8_4xb2-80k_cityscapes-769x769.py",
    "ccnet_r50": "ccnet/ccnet_r50-d8_4xb2-80k_cityscapes-769x769.py",
}


def check_size(size: str, key: str = "stages.tiny_models.size") -> str:
    from synthrel.errors import ConfigError

    if size not in SIZES:
        raise ConfigError(f"`{key}` is {size!r}; expected one of {', '.join(SIZES)}")
    return size
