"""Image captioners: BLIP through transformers, or the full CLIP-Interrogator when installed.

The paper's shipped captions are bare BLIP captions (no comma-separated CLIP "flavors"), i.e. the BLIP part of
CLIP-Interrogator 0.5.x, whose BLIP call is beam search with 8 beams, at least 5 and at most 32 tokens; the
defaults below follow it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from synthrel.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)

Mode = Literal["blip", "clip_interrogator"]


class BlipCaptioner:
    """Batched BLIP captioning (`BlipForConditionalGeneration` + `BlipProcessor`) from a hub id or local folder."""

    def __init__(self, model: str, device, num_beams: int = 8, min_new_tokens: int = 5, max_new_tokens: int = 32):
        from transformers import BlipForConditionalGeneration, BlipProcessor

        local = Path(model).expanduser()
        source = str(local) if local.exists() else model
        try:
            self.processor = BlipProcessor.from_pretrained(source)
            self.model = BlipForConditionalGeneration.from_pretrained(source).to(device).eval()
        except (OSError, ValueError) as e:
            raise WeightsError(
                f"BLIP captioner {model!r} could not be loaded ({type(e).__name__}: {str(e).splitlines()[0]}). "
                "Download Salesforce/blip-image-captioning-large (`hf download "
                "Salesforce/blip-image-captioning-large`) or point to a local folder. Set `stages.caption.model`; with "
                "profile=tiny it is `profile.models.blip`, a folder the tiny_models stage writes "
                "(python -m synthrel.run profile=tiny +stage=[tiny_models])."
            ) from None
        self.device = device
        tokenizer = self.processor.tokenizer
        text_config = self.model.config.text_config
        # Special tokens other than the start/end tokens are never part of a caption; suppressing them
        # guarantees `min_new_tokens` visible tokens, hence a non-empty caption, even from a random model.
        keep = {text_config.bos_token_id, text_config.sep_token_id, text_config.eos_token_id}
        self.suppress = [i for i in tokenizer.all_special_ids if i not in keep]
        self.generate_kwargs = dict(num_beams=num_beams, min_new_tokens=min_new_tokens, max_new_tokens=max_new_tokens)

    def __call__(self, images: list[np.ndarray]) -> list[str]:
        import torch

        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            ids = self.model.generate(**inputs, suppress_tokens=self.suppress, **self.generate_kwargs)
        return [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]


class ClipInterrogatorCaptioner:
    """The full `Interrogator.interrogate` caption (BLIP caption + CLIP flavors), as `clip_int.py` calls it."""

    def __init__(self, clip_model_name: str, device):
        try:
            from clip_interrogator import Config, Interrogator
        except ImportError:
            raise ConfigError(
                "caption mode 'clip_interrogator' (config key `stages.caption.mode`) needs the clip-interrogator "
                "package: `pip install clip-interrogator==0.5.4`; or use mode=blip (the paper's shipped captions)"
            ) from None
        self.interrogator = Interrogator(
            Config(clip_model_name=clip_model_name, device=str(device), quiet=True)
        )

    def __call__(self, images: list[np.ndarray]) -> list[str]:
        from PIL import Image

        return [self.interrogator.interrogate(Image.fromarray(im)).strip() for im in images]
