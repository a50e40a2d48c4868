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
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIDE = 32  # the library refuses smaller images
LIBRARY = "imagecorruptions-imaug"


def check_corruption(name: str, key: str = "corruptions") -> str:
    if name not in CORRUPTIONS:
        raise unknown_name("corruption", name, CORRUPTIONS, key)
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
    from imagecorruptions import corrupt as library_corrupt
    from imagecorruptions import corruption_dict

    check_corruption(name, "name")
    check_severity(severity, "severity")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"corrupt expects an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"corrupt needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got {image.shape[:2]}")
    seed = int(seed)
    kwargs = {"seed": seed} if "seed" in inspect.signature(corruption_dict[name]).parameters else {}
    with _global_numpy_seed(seed):
        out = library_corrupt(np.ascontiguousarray(image), severity=severity, corruption_name=name, **kwargs)
    return np.ascontiguousarray(out, dtype=np.uint8)
