"""Seeded Hendrycks & Dietterich (ICLR 2019) corruptions through the `imagecorruptions-imaug` package.

Why this library: `imagecorruptions==1.1.2` (the package of Michaelis et al., 2019, that the literature uses)
breaks on numpy 2 (`fog` calls the removed `np.float_`), and it imports `pkg_resources` and the deprecated
`scipy.ndimage.interpolation`. Its maintained fork `imagecorruptions-imaug==1.1.5` keeps the same functions and
the same severity 1..5 parameter tables (those of the reference ImageNet-C code) and runs with numpy 2.4 /
scipy 1.17 / scikit-image 0.26 (it also needs numba). Writing our own copy would only re-type that code.

The library draws from NumPy's global legacy RNG (and takes an explicit `seed` in `glass_blur` and
`impulse_noise`), so `corrupt` seeds that state for the call and restores it afterwards: the same
(image, name, severity, seed) gives the same bytes, whatever ran before. Not thread-safe (global state).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import numpy as np

from synthrel.errors import ConfigError, unknown_name

# The 15 benchmark corruptions then the 4 held-out validation ones, in the library's order
# (`imagecorruptions.get_corruption_names("all")`; a test checks the two agree).
CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
)
# Corruptions of synthrel's own, for domains that ImageNet-C does not cover (see `darken`).
EXTRA_CORRUPTIONS = ("darken",)
SEVERITIES = (1, 2, 3, 4, 5)
# ImageNet-C's parameter tables (Hendrycks & Dietterich, `make_imagenet_c.py`), reused by `darken`.
BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
MIN_SIDE = 32  # the library refuses smaller images
LIBRARY = "imagecorruptions-imaug"


def check_corruption(name: str, key: str = "corruptions") -> str:
    if name not in CORRUPTIONS + EXTRA_CORRUPTIONS:
        raise unknown_name("corruption", name, CORRUPTIONS + EXTRA_CORRUPTIONS, key)
    return name


def check_severity(severity, key: str = "severities") -> int:
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ConfigError(f"`{key}`: severity must be an integer in 1..5 (the ImageNet-C levels), got {severity!r}")
    return severity


def library_version() -> str:
    from importlib.metadata import version

    return f"{LIBRARY}=={version(LIBRARY)}"


@contextlib.contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt an RGB uint8 (H, W, 3) image (H, W >= 32) with corruption `name` at `severity` (1..5).

    `seed` (0 <= seed < 2**32) fixes every random draw of the corruption. Returns RGB uint8 of the same shape.
    """
    check_corruption(name, "name")
    check_severity(severity, "severity")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"corrupt expects an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"corrupt needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got {image.shape[:2]}")
    seed = int(seed)
    if name == "darken":
        return darken(image, severity)
    from imagecorruptions import corrupt as library_corrupt
    from imagecorruptions import corruption_dict

    kwargs = {"seed": seed} if "seed" in inspect.signature(corruption_dict[name]).parameters else {}
    with _global_numpy_seed(seed):
        out = library_corrupt(np.ascontiguousarray(image), severity=severity, corruption_name=name, **kwargs)
    return np.ascontiguousarray(out, dtype=np.uint8)


def darken(image: np.ndarray, severity: int) -> np.ndarray:
    """Night baseline: ImageNet-C `brightness` with the shift reversed, then ImageNet-C `contrast`, same severity.

    ImageNet-C has no darkening (its `brightness` adds to the HSV value). Here, at severity s: V <- clip(V - b_s, 0, 1)
    in HSV (b = 0.1..0.5, ImageNet-C's brightness table), back to RGB, then x <- (x - mean) * c_s + mean with the
    per-channel image mean (c = 0.4..0.05, ImageNet-C's contrast table). Deterministic (no random draw).
    """
    from skimage.color import hsv2rgb, rgb2hsv

    check_severity(severity, "severity")
    x = np.asarray(image, dtype=np.float64) / 255.0
    hsv = rgb2hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] - BRIGHTNESS_SHIFT[severity - 1], 0, 1)
    x = hsv2rgb(hsv)
    means = x.mean(axis=(0, 1), keepdims=True)
    x = np.clip((x - means) * CONTRAST_FACTOR[severity - 1] + means, 0, 1)
    return np.round(x * 255.0).astype(np.uint8)
