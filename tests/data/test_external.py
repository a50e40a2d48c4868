"""An external generator's folder (TSIT or any method) paired by name with Cityscapes label maps."""

import numpy as np
import pytest

from synthrel.conventions import LABEL_TO_TRAIN
from synthrel.data.external import ExternalDataset
from synthrel.data.io import write_png
from synthrel.errors import DatasetError

FRAMES = ["frankfurt_000000_000294", "lindau_000001_000019", "munster_000002_000019"]


def _write(tmp_path, frames=FRAMES, image_frames=None, size=(32, 64)):
    rng = np.random.default_rng(0)
    labels = tmp_path / "gtFine" / "val"
    for frame in frames:
        write_png(labels / frame.split("_")[0] / f"{frame}_gtFine_labelIds.png",
                  rng.integers(0, 34, (64, 128), dtype=np.uint8))
    images = tmp_path / "tsit" / "fog"
    for frame in image_frames or frames[:2]:
        write_png(images / f"{frame}_leftImg8bit.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return images, labels


def test_images_pair_with_their_labels_by_name_and_labels_follow_the_image_size(tmp_path):
    from PIL import Image

    images, labels = _write(tmp_path)
    dataset = ExternalDataset(images, labels, name="tsit_fog")
    assert dataset.ids() == FRAMES[:2]  # the third label has no image: allowed (a subset of Cityscapes val)
    sample = dataset[1]
    raw = np.asarray(Image.open(labels / "lindau" / f"{FRAMES[1]}_gtFine_labelIds.png"))
    # nearest-neighbour downscale 128x64 -> 64x32: every other pixel, by an independent index computation
    rows = np.floor((np.arange(32) + 0.5) * 64 / 32).astype(int)
    cols = np.floor((np.arange(64) + 0.5) * 128 / 64).astype(int)
    np.testing.assert_array_equal(sample["label"], LABEL_TO_TRAIN[raw[rows][:, cols]])
    assert sample["image"].shape == (32, 64, 3)


def test_an_image_without_a_label_is_named(tmp_path):
    images, labels = _write(tmp_path, image_frames=[FRAMES[0], "bonn_000009_000019"])
    with pytest.raises(DatasetError, match=r"1 image\(s\) .* have no label .*bonn_000009_000019_leftImg8bit\.png"):
        ExternalDataset(images, labels, name="tsit_fog")


def test_misnamed_files_are_listed(tmp_path):
    images, labels = _write(tmp_path)
    (images / "result_0001.png").write_bytes(b"x")
    (images / "sub").mkdir()
    (images / "sub" / f"{FRAMES[0]}.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"2 file\(s\) .* do not end with image_suffix '_leftImg8bit\.png'.*"
                                           r"result_0001\.png") as error:
        ExternalDataset(images, labels, name="tsit_fog")
    assert f"sub/{FRAMES[0]}.jpg" in str(error.value)


def test_a_key_found_twice_is_named(tmp_path):
    images, labels = _write(tmp_path)
    write_png(images / "again" / f"{FRAMES[0]}_leftImg8bit.png", np.zeros((32, 64, 3), np.uint8))
    with pytest.raises(DatasetError, match="several images for one key.*again"):
        ExternalDataset(images, labels)


def test_missing_folder_names_the_config_key(tmp_path):
    _, labels = _write(tmp_path)
    with pytest.raises(Exception, match=r"generator\.images\.fog"):
        ExternalDataset(tmp_path / "nowhere", labels, key="generator.images.fog")


def test_registered_by_one_yaml_file(compose_cfg, tmp_path):
    """synthrel/conf/generator/tsit.yaml: the example registration; the `baseline` dataset and its evaluate labels."""
    from hydra.utils import instantiate

    images, labels = _write(tmp_path)
    cfg = compose_cfg("+stage=[evaluate]", "profile=tiny", "+generator=tsit", "domain=fog",
                      f"generator.images.fog={images}", f"generator.labels={labels}",
                      "stages.evaluate.datasets=[baseline]")
    dataset = instantiate(cfg.datasets.baseline)
    assert isinstance(dataset, ExternalDataset) and dataset.name == "baseline_tsit_fog" and len(dataset) == 2
    assert dict(cfg.stages.evaluate.dataset_labels.baseline) == {
        "domain": "fog", "generator": "tsit", "key": "baseline_tsit_fog"}
    assert list(cfg.generator.domains) == ["fog", "night", "rain", "snow"]
