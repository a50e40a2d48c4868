"""The recorded list of every Hugging Face hub id that synthrel uses by default, and of ids known to be gone.

One place: tests/preflight/test_sources.py checks every default id in synthrel/conf/ and synthrel/ against `HUB_MODELS`,
so a repository that moves on the hub (as runwayml/* did in 2024-09) is fixed here and shows up in one test.

Sizes are approximate (parameter count x 4 bytes of the fp32 safetensors that `from_pretrained` reads, without
safety checker, fp16 variants or EMA copies); the preflight asks the hub for exact sizes when it is online.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthrel.analysis.fid import INCEPTION_WEIGHTS

GB = 1e9


@dataclass(frozen=True)
class HubModel:
    #: diffusers: a pipeline (model_index.json + component folders) or one diffusers model (config.json);
    #: transformers: config.json + model weights at the repository root
    library: str
    approx_bytes: float
    what: str


HUB_MODELS: dict[str, HubModel] = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": HubModel(
        "diffusers", 4.3 * GB, "Stable Diffusion 1.5 base (UNet 860M, VAE, CLIP text encoder)"),
    "stable-diffusion-v1-5/stable-diffusion-inpainting": HubModel(
        "diffusers", 4.3 * GB, "Stable Diffusion 1.5 inpainting (9-channel UNet)"),
    "stabilityai/stable-diffusion-xl-base-1.0": HubModel(
        "diffusers", 13.9 * GB, "Stable Diffusion XL base (UNet 2.6B, two text encoders, VAE)"),
    "madebyollin/sdxl-vae-fp16-fix": HubModel("diffusers", 0.34 * GB, "SDXL VAE that does not overflow in fp16"),
    "Salesforce/blip-image-captioning-large": HubModel("transformers", 1.9 * GB, "BLIP captioner (large)"),
    "IDEA-Research/grounding-dino-tiny": HubModel("transformers", 0.7 * GB, "Grounding DINO (Swin-T)"),
    "facebook/sam-vit-huge": HubModel("transformers", 2.6 * GB, "Segment Anything ViT-H"),
}

#: ids that no longer resolve, with their maintained replacement (RunwayML deleted its repositories in 2024-09).
RETIRED: dict[str, str] = {
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}

#: public files outside the hub, by file name: URL and full sha256 where it is known (None: not recorded).
PUBLIC_FILES: dict[str, tuple[str, str | None]] = {
    INCEPTION_WEIGHTS: ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS,
                        None),
}
