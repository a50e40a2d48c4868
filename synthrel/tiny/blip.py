"""A tiny randomly initialised BLIP captioner (the architecture of Salesforce/blip-image-captioning-large).

Saved with save_pretrained (model + BlipProcessor) so the caption stage loads it exactly like the hub
checkpoint. The WordPiece vocabulary is written offline; its words are the tiny CLIP tokenizer's words,
so random captions stay short once tokenized for the diffusion prompt.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from synthrel.jobs import atomic_dir
from synthrel.tiny.diffusion import TINY_WORDS

log = logging.getLogger(__name__)

#: BERT special tokens first ([PAD] = 0 as in bert-base-uncased), then BLIP's decoder start token [DEC].
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")
IMAGE_SIZE = 32
#: Wider than BERT's 0.02 so that a random model's captions depend on the image (with 0.02 every image
#: gets the same caption, and tests could not tell one image's caption from another's).
INIT_RANGE = 0.5


def build_tiny_blip(out_dir: str | Path, seed: int = 0, size: str = "tiny", device=None) -> Path:
    """Build the BLIP captioner (tiny, or real: BLIP-large) into `out_dir` (skipped when complete, atomic)."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "processor_config.json").is_file():
        return out_dir
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory() as scratch:
        model, processor = _build(seed, Path(scratch) / "vocab", size, device)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    log.info("built tiny BLIP captioner in %s", out_dir)
    return out_dir


def _build(seed: int, vocab_dir: Path, size: str = "tiny", device=None):
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    vocab_dir.mkdir(parents=True, exist_ok=True)
    tokens = list(SPECIAL_TOKENS) + [w for w in dict.fromkeys(TINY_WORDS)] + [",", "."]
    if size == "real":  # every id of the real embedding decodes to a word
        from synthrel.tiny.real_configs import BLIP_VOCAB

        tokens += [f"w{i}" for i in range(BLIP_VOCAB - len(tokens))]
    (vocab_dir / "vocab.txt").write_text("".join(t + "\n" for t in tokens))
    tokenizer = BertTokenizer.from_pretrained(vocab_dir, bos_token="[DEC]", model_max_length=512)
    ids = {t: i for i, t in enumerate(tokens)}
    image_size = IMAGE_SIZE
    if size == "real":
        from synthrel.tiny.real_configs import BLIP_IMAGE_SIZE, BLIP_LARGE

        image_size = BLIP_IMAGE_SIZE
        special = {k: ids[t] for k, t in (("pad_token_id", "[PAD]"), ("bos_token_id", "[DEC]"),
                                          ("eos_token_id", "[SEP]"), ("sep_token_id", "[SEP]"))}
        config = BlipConfig(**{**BLIP_LARGE, "text_config": {**BLIP_LARGE["text_config"], **special,
                                                               "vocab_size": len(tokens)}})
    else:
        config = _tiny_config(tokens, ids)
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = BlipForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _tiny_config(tokens: list[str], ids: dict[str, int]):
    from transformers import BlipConfig

    return BlipConfig(
        text_config=dict(
            vocab_size=len(tokens),
            hidden_size=32,
            encoder_hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            pad_token_id=ids["[PAD]"],
            bos_token_id=ids["[DEC]"],
            eos_token_id=ids["[SEP]"],
            sep_token_id=ids["[SEP]"],
            initializer_range=INIT_RANGE,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=8,
            initializer_range=INIT_RANGE,
        ),
        projection_dim=32,
    )
