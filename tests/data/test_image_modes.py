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


def _pil_rgb(path):
    """Independent reference for 8-bit files: PIL's decoder, converted to RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("kind", ["rgb", "rgb_interlaced", "rgb_trns", "rgba", "palette", "grey"])
def test_png_fast_path_gives_pils_values(tmp_path, kind):
    """8-bit RGB PNGs take OpenCV's decoder (synthrel.data.io._read_rgb_png), every other kind PIL's; both give
    PIL's values, on natural-looking content and on noise (different PNG filters), big enough for several IDATs."""
    from synthrel.data.io import _read_rgb_png

    rng = np.random.default_rng(2)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8), (5, 5), 2)
    rgb = np.concatenate([smooth, rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)])
    path = tmp_path / f"{kind}.png"
    image = Image.fromarray(rgb)
    if kind == "rgb":
        image.save(path, compress_level=1)
    elif kind == "rgb_interlaced":  # Adam7: OpenCV writes it, PIL reads it
        cv2.imwrite(str(path), rgb[..., ::-1])
        assert Image.open(path).mode == "RGB"
    elif kind == "rgb_trns":  # an RGB colour key: OpenCV would add alpha, so PIL reads it
        image.save(path, transparency=tuple(int(v) for v in rgb[0, 0]))
    else:
        image.convert({"rgba": "RGBA", "palette": "P", "grey": "L"}[kind]).save(path)
    np.testing.assert_array_equal(read_image(path), _pil_rgb(path))
    assert (_read_rgb_png(path) is not None) == (kind in ("rgb", "rgb_interlaced"))


@pytest.mark.parametrize("damage", ["truncated_end", "truncated_half", "flipped_byte"])
def test_damaged_rgb_png_is_refused_by_name(tmp_path, damage):
    """A damaged 8-bit RGB PNG that OpenCV cannot decode whole goes to PIL, which names the file."""
    path = tmp_path / "im.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    if damage == "flipped_byte":
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data[: {"truncated_end": len(data) - 200, "truncated_half": len(data) // 2}.get(damage)]))
    with pytest.raises(DatasetError, match="im.png"):
        read_image(path)


def test_lookup_and_id_check_equal_numpy_indexing():
    """cv2.LUT (synthrel.data.io.lookup) against numpy's indexing, on every uint8 value, contiguous or not."""
    from synthrel.conventions import LABEL_TO_TRAIN
    from synthrel.data.base import SegDataset, id_table
    from synthrel.data.io import lookup

    raw = np.random.default_rng(4).integers(0, 256, (40, 60), dtype=np.uint8)
    raw[0, :256 // 60 + 1] = 0
    for array in (raw, raw[:, ::2], raw.T):
        np.testing.assert_array_equal(lookup(LABEL_TO_TRAIN, array), LABEL_TO_TRAIN[array])
    assert lookup(LABEL_TO_TRAIN, raw[:0]).shape == (0, 60)
    valid = id_table(range(34))
    ok = raw % 34
    SegDataset.check_ids(None, ok, "x.png", valid, "labelIds")  # 0..33: no error
    bad = ok.copy()
    bad[5, 7] = 200
    with pytest.raises(DatasetError, match=r"x.png holds ids \[200\]"):
        SegDataset.check_ids(None, bad, "x.png", valid, "labelIds")
