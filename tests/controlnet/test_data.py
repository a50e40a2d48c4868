"""The ControlNet training stream: same crop for image and label, encodings, seeding, rank sharding."""

import json

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from synthrel.controlnet.data import ControlNetTrainData, StreamSampler, load_captions
from synthrel.data.cityscapes import CityscapesDataset
from synthrel.errors import DatasetError


def make_data(tiny_cityscapes, resolution=32, **kwargs):
    dataset = CityscapesDataset(tiny_cityscapes["root"], split="train")
    return ControlNetTrainData(dataset, load_captions(tiny_cityscapes["captions"]), resolution, **kwargs)


def source_arrays(data, item_id):
    index = data.dataset.ids().index(item_id)
    item = data.dataset.items[index]
    return np.asarray(Image.open(item.image)), np.asarray(Image.open(item.label))


def test_image_and_label_get_the_same_square_crop(tiny_cityscapes):
    data = make_data(tiny_cityscapes, resolution=32)  # 64x32 frames: side 32, no resize
    offsets = set()
    for position in range(8):
        sample = data[position]
        image, label = source_arrays(data, sample["id"])
        left, top, right, bottom = sample["crop_box"].tolist()
        assert (right - left, bottom - top, top) == (32, 32, 0) and 0 <= left <= 32
        offsets.add(left)
        np.testing.assert_array_equal(sample["label_ids"].numpy(), label[:, left:right])
        pixels = ((sample["pixel_values"].permute(1, 2, 0).numpy() + 1.0) * 127.5).round()
        np.testing.assert_array_equal(pixels, image[:, left:right].astype(np.float64))
        # The official hint: one channel (labelId + 1) / 34.
        np.testing.assert_allclose(sample["conditioning"].numpy(), (label[None, :, left:right] + 1.0) / 34.0)
        assert sample["pixel_values"].min() >= -1.0 and sample["pixel_values"].max() <= 1.0
    assert len(offsets) > 1  # the crops are drawn, not fixed


def test_labels_are_resized_with_nearest_neighbour(tiny_cityscapes):
    sample = make_data(tiny_cityscapes, resolution=16)[0]
    _, label = source_arrays(make_data(tiny_cityscapes), sample["id"])
    left, top, right, bottom = sample["crop_box"].tolist()
    # 2x nearest downscale keeps every second source pixel: no interpolated (invalid) ids.
    np.testing.assert_array_equal(sample["label_ids"].numpy(), label[top:bottom:2, left:right:2])
    assert sample["pixel_values"].shape == (3, 16, 16)


def test_palette_encoding_uses_the_cityscapes_colours(tiny_cityscapes):
    sample = make_data(tiny_cityscapes, conditioning="palette")[3]
    label = sample["label_ids"].numpy()
    expected = np.stack([np.array(id2label[int(i)].color, dtype=np.float32) / 255.0 for i in label.ravel()])
    np.testing.assert_allclose(sample["conditioning"].numpy(), expected.T.reshape(3, *label.shape))


def test_each_epoch_shows_every_image_once_and_draws_are_seeded(tiny_cityscapes):
    data = make_data(tiny_cityscapes, seed=3)
    n = len(data)
    epoch0 = [data[p]["id"] for p in range(n)]
    epoch1 = [data[p]["id"] for p in range(n, 2 * n)]
    assert sorted(epoch0) == sorted(epoch1) == sorted(data.dataset.ids())
    again = make_data(tiny_cityscapes, seed=3)
    for p in (0, 5, 11):
        a, b = data[p], again[p]
        assert a["id"] == b["id"] and torch.equal(a["crop_box"], b["crop_box"])
        assert data.draw_record(p)["id"] == a["id"]
    other = make_data(tiny_cityscapes, seed=4)
    assert [other[p]["crop_box"].tolist() for p in range(12)] != [data[p]["crop_box"].tolist() for p in range(12)]


def test_horizontal_flip_is_off_by_default_and_flips_both(tiny_cityscapes):
    assert not any(make_data(tiny_cityscapes)[p]["flip"] for p in range(12))
    data = make_data(tiny_cityscapes, hflip=True)
    flipped = [p for p in range(12) if data[p]["flip"]]
    assert 0 < len(flipped) < 12
    sample = data[flipped[0]]
    image, label = source_arrays(data, sample["id"])
    left, _, right, _ = sample["crop_box"].tolist()
    np.testing.assert_array_equal(sample["label_ids"].numpy(), label[:, left:right][:, ::-1])
    pixels = ((sample["pixel_values"].permute(1, 2, 0).numpy() + 1.0) * 127.5).round()
    np.testing.assert_array_equal(pixels, image[:, left:right][:, ::-1].astype(np.float64))


def test_ranks_share_the_stream_without_overlap_or_gap():
    start, world = 5, 3
    taken = [list(zip(range(4), StreamSampler(start, rank, world), strict=False)) for rank in range(world)]
    positions = sorted(p for rank in taken for _, p in rank)
    assert positions == list(range(start * world, start * world + 4 * world))


def test_missing_captions_are_reported(tiny_cityscapes, tmp_path):
    with pytest.raises(DatasetError, match="caption stage"):
        load_captions(tmp_path / "nope.jsonl")
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"id": "aachen_000000_000000", "caption": "a road"}) + "\n")
    dataset = CityscapesDataset(tiny_cityscapes["root"], split="train")
    with pytest.raises(DatasetError, match="no caption for 3 of 4"):
        ControlNetTrainData(dataset, load_captions(partial), 32)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(DatasetError, match="line 1"):
        load_captions(bad)
