"""Image and label files: RGB uint8 in, single-channel uint8 labels, atomic PNG writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from synthrel.errors import DatasetError
from synthrel.jobs import atomic_path

#: 16-bit greyscale modes: PIL's convert("RGB") clips them (every value above 255 becomes white)
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); corrupt or truncated files raise DatasetError.

    16-bit greyscale keeps its high byte, as PIL reduces 16-bit RGB PNGs (its convert("RGB") would clip it to
    white); 32-bit integer and float images are refused: their value range is not known. 8-bit RGB PNGs (every
    dataset's and stage's images) are decoded by OpenCV (`_read_rgb_png`), the rest by PIL.
    """
    fast = _read_rgb_png(path)
    if fast is not None:
        return fast
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _SIXTEEN_BIT:
                grey = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if im.mode in ("I", "F"):
                raise DatasetError(f"image {path} is {'32-bit integer' if im.mode == 'I' else 'float'} (PIL mode "
                                   f"{im.mode}); expected an 8-bit RGB or greyscale image, or 16-bit greyscale")
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"unreadable image {path}: {e} (expected a complete PNG/JPEG file)") from None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_rgb_png(path) -> np.ndarray | None:
    """An 8-bit RGB PNG (IHDR bit depth 8, colour type 2) decoded by OpenCV's libpng, ~1.3x faster than PIL's
    decoder (the evaluate stage's loader workers are bound by it on 2-Mpx images) and, PNG being lossless, the
    same values; None for any other file, or one OpenCV does not decode whole (truncated, bad CRC, a tRNS colour
    key that it turns into alpha): PIL reads those, and says what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or data[24:26] != b"\x08\x02":
        return None
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    size = (int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big"))
    if array is None or array.dtype != np.uint8 or array.shape != (*size, 3):
        return None
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def lookup(table: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """`table[raw]`: by OpenCV's LUT (~8x numpy's indexing on a 2-Mpx label; the label readers run it per image in
    the loader workers) for a uint8 (H, W) map and a 256-entry uint8 table, else by indexing."""
    if raw.dtype == np.uint8 and raw.ndim == 2 and raw.size and table.dtype == np.uint8 and table.shape == (256,):
        import cv2

        return cv2.LUT(np.ascontiguousarray(raw), table)
    return table[raw]


def read_label(path: str | os.PathLike, channel: int | None = None) -> np.ndarray:
    """Read a label PNG as uint8 (H, W). `channel` picks one channel of a colour-encoded label."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(f"label file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"unreadable label {path}: {e} (expected a complete single-channel PNG)") from None
    if arr.ndim == 3:
        if channel is None:
            raise DatasetError(f"label {path} has {arr.shape[2]} channels; expected a single-channel PNG")
        arr = arr[..., channel]
    if arr.dtype != np.uint8:
        if arr.max(initial=0) > 255 or arr.min(initial=0) < 0:
            raise DatasetError(f"label {path} has values outside 0..255 (dtype {arr.dtype})")
        arr = arr.astype(np.uint8)
    return arr


#: zlib level of written PNGs (OpenCV's default): lossless like any level, and a 512² RGB image encodes in
#: 20 ms instead of the 130 ms of PIL's default level 6, longer than generating it on an H100 (docs/benchmarks.md)
PNG_COMPRESS_LEVEL = 1


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an RGB (H, W, 3) or label (H, W) uint8 array as PNG, atomically."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"write_png expects uint8, got {array.dtype} for {path}")
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def write_png16(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a single-channel uint16 array (Cityscapes disparity) as a 16-bit PNG, atomically."""
    array = np.asarray(array)
    if array.dtype != np.uint16 or array.ndim != 2:
        raise TypeError(f"write_png16 expects uint16 (H, W), got {array.dtype} {array.shape} for {path}")
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def write_jpg(path: str | os.PathLike, array: np.ndarray, quality: int = 95) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(tmp, format="JPEG", quality=quality)


def require_dir(path: str | os.PathLike, key: str, layout: str) -> Path:
    """Check a dataset root exists, else say which config key to set and the layout expected."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(
            f"dataset root {str(path)!r} does not exist; set `{key}` to the folder that holds\n{layout}"
        )
    return path


def require_split(parent: Path, split: str, split_key: str, root_key: str, layout: str) -> Path:
    """`parent/<split>`; a split missing from a folder that exists is a wrong split, named with the splits found
    (not a missing download)."""
    path = parent / str(split)
    if not path.is_dir() and parent.is_dir():
        found = sorted(p.name for p in parent.iterdir() if p.is_dir())
        raise DatasetError(f"split {split!r} (config key `{split_key}`) is not under {parent}; splits found there: "
                           f"{', '.join(found) or 'none'}")
    return require_dir(path, root_key, layout)
