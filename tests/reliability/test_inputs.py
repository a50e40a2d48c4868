"""Inputs that do not fit (issue #35 items 6, 7): each stops the run naming both files or the config key, before
anything is written; a caption too long for the text encoder is shortened, never the domain phrase."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from reliability_utils import EVALUATE, GENERATE, manifest_records, visible_files

from synthrel.errors import DatasetError
from synthrel.run import run_stages

EVAL_DEMO = [*EVALUATE, "stages.evaluate.models=[pspnet_r18]", "stages.evaluate.datasets=[demo]"]
GENERATE_SMALL = [*GENERATE, "profile.num_samples=2"]


def refused(cfg, kind, pattern: str) -> str:
    """Run `cfg`; it fails with a `kind` error matching `pattern` (raised as is or as the cause of Hydra's
    InstantiationException: what the user reads). Returns the message."""
    with pytest.raises(Exception) as caught:
        run_stages(cfg)
    error = caught.value
    while error is not None and not isinstance(error, kind):
        error = error.__cause__
    assert error is not None, f"expected {kind.__name__}, got {caught.value!r}"
    assert re.search(pattern, str(error), flags=re.S), f"{pattern!r} not in: {error}"
    return str(error)


def shrink_labels(root, columns: int = 8):
    for label in root.rglob("*_gtFine_labelIds.png"):
        Image.fromarray(np.asarray(Image.open(label))[:, :-columns]).save(label)


def test_a_split_typo_names_the_split_key_and_the_splits_found(compose_world, tmp_path, demo_copy):
    cfg = compose_world(tmp_path / "artifacts", *EVAL_DEMO, f"datasets.demo.root={demo_copy}",
                        "datasets.demo.split=vall")
    refused(cfg, DatasetError, rf"split 'vall' \(config key `datasets.demo.split`\) is not under "
                              rf"{demo_copy}/leftImg8bit; splits found there: val$")


def test_the_same_item_id_in_two_city_folders_is_refused_naming_both(compose_world, tmp_path, demo_copy):
    image = sorted(demo_copy.rglob("*_leftImg8bit.png"))[0]
    label = sorted(demo_copy.rglob("*_gtFine_labelIds.png"))[0]
    twins = []
    for path in (image, label):
        other = path.parent.parent / "zurich" / path.name
        other.parent.mkdir(exist_ok=True)
        shutil.copy(path, other)
        twins.append(other)
    cfg = compose_world(tmp_path / "artifacts", *EVAL_DEMO, f"datasets.demo.root={demo_copy}")
    key = image.name[: -len("_leftImg8bit.png")]
    refused(cfg, DatasetError, rf"images {image} and {twins[0]} have the same item id '{key}'")
    assert not (tmp_path / "artifacts" / "results").exists()


def test_generate_refuses_label_maps_of_another_size_than_their_images(compose_world, tmp_path, demo_copy):
    """generate planned crops from the image size and conditioned on the smaller label: wrong labels, exit 0."""
    shrink_labels(demo_copy)
    artifacts = tmp_path / "artifacts"
    cfg = compose_world(artifacts, *GENERATE_SMALL, f"datasets.cityscapes.root={demo_copy}")
    refused(cfg, DatasetError, rf"size mismatch: label {demo_copy}/gtFine/val/\w+/\w+_gtFine_labelIds.png is "
                              rf"248x128 but its image {demo_copy}/leftImg8bit/val/\w+/\w+_leftImg8bit.png is 256x128")
    assert not (artifacts / "synthetic").exists() or not visible_files(artifacts / "synthetic")


def test_corrupt_refuses_label_maps_of_another_size_than_their_images(compose_world, tmp_path, demo_copy):
    shrink_labels(demo_copy)
    cfg = compose_world(tmp_path / "artifacts", "+stage=[corrupt]", f"datasets.cityscapes.root={demo_copy}",
                        "stages.corrupt.corruptions=[brightness]", "profile.num_samples=2",
                        "backbone.resolution=64")
    refused(cfg, DatasetError, r"size mismatch: label .*_gtFine_labelIds.png is 248x128 but its image "
                              r".*_leftImg8bit.png is 256x128")


def test_void_labels_are_reported_as_no_evaluable_pixel_not_as_train_ids(compose_world, tmp_path, demo_copy):
    for path in demo_copy.rglob("*_gtFine_labelIds.png"):
        Image.fromarray(np.full_like(np.asarray(Image.open(path)), 4)).save(path)  # 4 'static': void
    cfg = compose_world(tmp_path / "artifacts", *EVAL_DEMO, f"datasets.demo.root={demo_copy}")
    message = refused(cfg, DatasetError, r"no label holds an evaluable pixel")
    assert "trainIds" not in message


def test_a_long_caption_is_shortened_and_the_domain_phrase_kept(world, compose_world, tmp_path):
    """~190-token captions pushed ", in fog" past CLIP's 77 tokens: the set had no fog prompt (a warning only)."""
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(world / "outputs" / "tiny" / "models" / "sd15" / "tokenizer")
    words = " ".join(f"with a red car number {k} and" for k in range(40))
    captions = tmp_path / "long_captions.jsonl"
    records = [json.loads(line) for line in (world / "captions_val.jsonl").read_text().splitlines()]
    captions.write_text("".join(json.dumps({**r, "caption": f"a street {words} a tree"}) + "\n" for r in records))
    assert len(tokenizer(json.loads(captions.read_text().splitlines()[0])["caption"]).input_ids) > 150
    artifacts = tmp_path / "artifacts"
    cfg = compose_world(artifacts, *GENERATE_SMALL, f"stages.generate.captions={captions}")
    assert run_stages(cfg)["generate"]["generated"] == 2
    written = manifest_records(artifacts / "synthetic" / "sd15" / "fog" / "manifest.jsonl")
    assert len(written) == 2
    for record in written:
        assert record["prompt"].endswith(", in fog")
        assert record["prompt"] == f"{record['caption_shortened']}, in fog"
        assert record["caption"].startswith(record["caption_shortened"])
        assert len(record["caption_shortened"]) < len(record["caption"])
        n = len(tokenizer(record["prompt"]).input_ids)
        assert n <= tokenizer.model_max_length
        # the longest such caption: one more word does not fit
        longer = " ".join(record["caption"].split()[: len(record["caption_shortened"].split()) + 1])
        assert len(tokenizer(f"{longer}, in fog").input_ids) > tokenizer.model_max_length


def test_a_caption_that_fits_is_kept_whole(world, compose_world, tmp_path):
    artifacts = tmp_path / "artifacts"
    run_stages(compose_world(artifacts, *GENERATE_SMALL))
    for record in manifest_records(artifacts / "synthetic" / "sd15" / "fog" / "manifest.jsonl"):
        assert record["caption_shortened"] is None
        assert record["prompt"] == f"{record['caption']}, in fog"
