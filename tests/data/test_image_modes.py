"""Image files of every bit depth and mode read as the RGB uint8 that OpenCV gives, or are refused by name."""

import cv2
import numpy as np
import pytest
from PIL import Image

from synthrel.data.io import read_image
from synthrel.errors import DatasetError


def _cv2_rgb8(path):
    """Independent reference: OpenCV at full depth, high byte of 16-bit values, BGR -> RGB."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw.dtype == np.uint16:
        raw = (raw >> 8).astype(np.uint8)
    if raw.ndim == 2:
        return np.repeat(raw[..., None], 3, axis=2)
    return raw[..., ::-1]


def test_16_bit_greyscale_and_rgb_keep_their_range(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 65536, (12, 20), dtype=np.uint16)
    grey[0, :3] = [0, 255, 65535]  # 255 is black in 16 bits; PIL's convert("RGB") made it and all above white
    cv2.imwrite(str(tmp_path / "grey16.png"), grey)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rng.integers(0, 65536, (12, 20, 3), dtype=np.uint16))
    for name in ("grey16.png", "rgb16.png"):
        ours = read_image(tmp_path / name)
        assert ours.dtype == np.uint8 and ours.shape == (12, 20, 3)
        np.testing.assert_array_equal(ours, _cv2_rgb8(tmp_path / name))
    assert read_image(tmp_path / "grey16.png")[0, :3, 0].tolist() == [0, 0, 255]
    assert len(np.unique(read_image(tmp_path / "grey16.png"))) > 100  # 240 pixels, not clipped to white


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK"])
def test_8_bit_modes_read_as_rgb(tmp_path, mode):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    path = tmp_path / f"im.{'jpg' if mode == 'CMYK' else 'png'}"
    Image.fromarray(rgb).convert(mode).save(path)
    ours = read_image(path)
    assert ours.dtype == np.uint8 and ours.shape == (8, 10, 3)
    if mode != "CMYK":  # OpenCV reads CMYK JPEGs through its own colour conversion
        expected = np.asarray(Image.open(path).convert("RGB"))
        np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_and_float_images_are_refused_by_name(tmp_path, mode):
    path = tmp_path / "deep.tif"
    Image.fromarray(np.ones((4, 4), dtype=np.int32 if mode == "I" else np.float32)).save(path)
    with pytest.raises(DatasetError, match=rf"image .*deep.tif is .*PIL mode {mode}.*expected an 8-bit"):
        read_image(path)
