"""The caption stage on a tiny randomly initialised BLIP: batching, resume, errors, config."""

import json

import numpy as np
import pytest

from synthrel.captions.job import CaptionJob, read_captions
from synthrel.data.io import write_png
from synthrel.errors import ConfigError, DatasetError, WeightsError


def write_split(root, ids, split="val", seed=0):
    rng = np.random.default_rng(seed)
    for id_ in ids:
        city = id_.split("_")[0]
        write_png(root / "leftImg8bit" / split / city / f"{id_}_leftImg8bit.png",
                  rng.integers(0, 256, size=(40, 80, 3), dtype=np.uint8))
        write_png(root / "gtFine" / split / city / f"{id_}_gtFine_labelIds.png", np.full((40, 80), 7, np.uint8))


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    from synthrel.tiny.blip import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("models") / "blip")


def make_job(root, blip, out, **overrides):
    datasets = {"cityscapes": {"_target_": "synthrel.data.cityscapes.CityscapesDataset", "root": str(root),
                               "split": "val"}}
    params = dict(dataset="cityscapes", datasets=datasets, output_dir=str(out), splits=["val"], model=str(blip),
                  batch_size=2, num_beams=2, min_new_tokens=3, max_new_tokens=6, device="cpu")
    params.update(overrides)
    return CaptionJob(**params)


def reference_captions(blip, images):
    """Each image alone through transformers' own BLIP generate, with the same decoding settings."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    processor = BlipProcessor.from_pretrained(blip)
    model = BlipForConditionalGeneration.from_pretrained(blip).eval()
    never_in_a_caption = processor.tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[MASK]"])
    out = []
    for image in images:
        ids = model.generate(**processor(images=image, return_tensors="pt"), num_beams=2, min_new_tokens=3,
                             max_new_tokens=6, suppress_tokens=never_in_a_caption)
        out.append(processor.decode(ids[0], skip_special_tokens=True).strip())
    return out


def test_batched_captions_match_transformers_and_resume(blip, tmp_path):
    from PIL import Image

    root = tmp_path / "cityscapes"
    ids = ["aachen_000000_000019", "aachen_000001_000019", "bonn_000000_000019"]
    write_split(root, ids)
    summary = make_job(root, blip, tmp_path / "captions").run()
    path = tmp_path / "captions" / "cityscapes_val.jsonl"
    assert summary["files"] == {"val": str(path)} and summary["captioned"] == 3
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ids
    assert all(isinstance(r["caption"], str) and r["caption"] for r in records)
    images = [np.asarray(Image.open(r["image"]).convert("RGB")) for r in records]
    captions = [r["caption"] for r in records]
    assert len(set(captions)) > 1  # the tiny captioner looks at the image, so a mix-up would show
    assert captions == reference_captions(blip, images)
    assert all(len(c.split()) >= 3 for c in captions)  # min_new_tokens visible words

    # resume: two new images and a record cut by a kill -> only those three are captioned
    write_split(root, ["bonn_000001_000019", "bonn_000002_000019"], seed=1)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:10])
    summary = make_job(root, blip, tmp_path / "captions").run()
    assert (summary["captioned"], summary["skipped"]) == (3, 2)
    captions = read_captions(path)
    assert len(captions) == 5 and len(path.read_text().splitlines()) == 5


def test_clip_interrogator_mode_needs_its_package(blip, tmp_path):
    try:
        import clip_interrogator  # noqa: F401
    except ImportError:
        root = tmp_path / "cs"
        write_split(root, ["aachen_000000_000019"])
        with pytest.raises(ConfigError, match="pip install clip-interrogator"):
            make_job(root, blip, tmp_path / "c", mode="clip_interrogator").run()


def test_missing_model_and_missing_captions_are_clear(tmp_path):
    root = tmp_path / "cs"
    write_split(root, ["aachen_000000_000019"])
    with pytest.raises(WeightsError, match="stages.caption.model"):
        make_job(root, tmp_path / "absent_blip", tmp_path / "c").run()
    with pytest.raises(WeightsError, match="blip-image-captioning-large"):
        make_job(root, "Salesforce/not-in-the-cache", tmp_path / "c").run()
    with pytest.raises(DatasetError, match="caption stage"):
        read_captions(tmp_path / "c" / "cityscapes_val.jsonl")


def test_caption_stage_config(compose_cfg):
    import hydra.utils

    cfg = compose_cfg("+stage=[caption,generate]")
    job = hydra.utils.instantiate(cfg.stages.caption, _convert_="all")
    assert job.model == "Salesforce/blip-image-captioning-large" and job.mode == "blip"
    assert type(job.datasets["cityscapes"]) is dict
    assert cfg.stages.generate.captions == f"{job.output_dir}/cityscapes_val.jsonl"
