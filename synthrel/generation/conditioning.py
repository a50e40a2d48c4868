"""ControlNet conditioning: Cityscapes labelIds maps -> the hint tensor, and the shared square crop.

Training and generation import these functions, so a ControlNet is always sampled with the encoding it
was trained on (config key `conditioning`).

- "label_id": one channel (labelId + 1) / 34, as the official code (`ControlNet/dataset.py`), values in
  [1/34, 1]; replicated when the ControlNet expects more channels.
- "palette": the Cityscapes colour of each labelId, RGB scaled to [0, 1] (3 channels).
"""

from __future__ import annotations

from typing import Literal, get_args

import cv2
import numpy as np

from synthrel.conventions import LABEL_ID_COLORS, NUM_LABEL_IDS
from synthrel.errors import ConfigError, DatasetError

Encoding = Literal["label_id", "palette"]
ENCODINGS = get_args(Encoding)


def check_encoding(encoding: str, key: str = "conditioning") -> str:
    if encoding not in ENCODINGS:
        from synthrel.errors import unknown_name

        raise unknown_name("conditioning encoding", encoding, ENCODINGS, key)
    return encoding


def encoding_channels(encoding: str) -> int:
    """Channels the encoding produces natively (what `ControlNetModel(conditioning_channels=...)` needs)."""
    return {"label_id": 1, "palette": 3}[check_encoding(encoding)]


def encode_label_ids(label_ids: np.ndarray, encoding: str, channels: int | None = None) -> np.ndarray:
    """Encode a labelIds map (H, W) uint8 in 0..33 as a float32 (C, H, W) hint.

    `channels` is the ControlNet's `conditioning_channels`: the one-channel label_id encoding is
    replicated to it; any other mismatch is a ConfigError naming both.
    """
    check_encoding(encoding)
    label_ids = np.asarray(label_ids)
    if label_ids.ndim != 2:
        raise DatasetError(f"expected a single-channel labelIds map (H, W), got shape {label_ids.shape}")
    if label_ids.size and label_ids.max() >= NUM_LABEL_IDS:
        raise DatasetError(
            f"labelIds map holds id {int(label_ids.max())} outside 0..{NUM_LABEL_IDS - 1}; "
            "conditioning expects Cityscapes labelIds (gtFine_labelIds.png), not trainIds"
        )
    if encoding == "label_id":
        hint = ((label_ids.astype(np.float32) + 1.0) / NUM_LABEL_IDS)[None]
    else:
        hint = (LABEL_ID_COLORS[label_ids].astype(np.float32) / 255.0).transpose(2, 0, 1)
    if channels is None or channels == hint.shape[0]:
        return np.ascontiguousarray(hint)
    if hint.shape[0] == 1:
        return np.ascontiguousarray(np.repeat(hint, channels, axis=0))
    raise ConfigError(
        f"conditioning encoding {encoding!r} gives {hint.shape[0]} channels but the ControlNet expects "
        f"{channels} (its conditioning_channels); set `conditioning` to the encoding it was trained with"
    )


def decode_label_id_hint(hint: np.ndarray) -> np.ndarray:
    """Inverse of the label_id encoding (exact in float32 for all 34 ids): (C, H, W) -> labelIds (H, W)."""
    return np.rint(np.asarray(hint)[0] * NUM_LABEL_IDS - 1.0).astype(np.uint8)


def square_crop_box(height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random square of side min(H, W) with a uniform offset along the longer side: (left, top, right, bottom).

    For a 2048x1024 Cityscapes frame this is the official crop: side 1024, column offset in [0, 1024].
    """
    side = min(height, width)
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    return left, top, left + side, top + side


def crop_resize_label(label: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop a label map to `box` and resize it to size x size with cv2.INTER_NEAREST, as the official code."""
    left, top, right, bottom = box
    crop = np.ascontiguousarray(label[top:bottom, left:right])
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_NEAREST)


def crop_resize_image(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop an RGB image to `box` and resize it to size x size (area filter when shrinking, cubic when growing)."""
    left, top, right, bottom = box
    crop = np.ascontiguousarray(image[top:bottom, left:right])
    interpolation = cv2.INTER_AREA if size <= crop.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interpolation)
