"""Seeded corruptions against hand-worked definitions (Hendrycks & Dietterich 2019 severity tables)."""

import colorsys

import numpy as np
import pytest

from synthrel.corruptions.apply import CORRUPTIONS, corrupt
from synthrel.errors import ConfigError

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)  # non-square: catches H/W swaps
FAST = [c for c in CORRUPTIONS if c != "glass_blur"]  # glass_blur compiles a numba kernel (~10 s)


def test_names_are_the_library_list():
    from imagecorruptions import get_corruption_names

    assert list(CORRUPTIONS) == get_corruption_names("all")


def _changes_image_keeps_shape(name):
    out = corrupt(IMAGE, name, 3, seed=1)
    assert out.dtype == np.uint8 and out.shape == IMAGE.shape
    assert (out != IMAGE).mean() > 0.05, name


@pytest.mark.parametrize("name", FAST)
def test_every_corruption_changes_the_image_and_keeps_its_shape(name):
    _changes_image_keeps_shape(name)


@pytest.mark.slow
def test_glass_blur_changes_the_image():
    _changes_image_keeps_shape("glass_blur")


@pytest.mark.parametrize("name", ["fog", "snow", "frost", "gaussian_noise", "motion_blur", "impulse_noise", "spatter"])
def test_same_seed_same_bytes_other_seed_other_bytes(name):
    a, b, c = (corrupt(IMAGE, name, 3, seed=s) for s in (7, 7, 8))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_global_numpy_rng_is_restored():
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    corrupt(IMAGE, "gaussian_noise", 2, seed=5)
    np.testing.assert_array_equal(np.random.random(3), expected)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_brightness_adds_c_to_the_hsv_value(severity):
    """ImageNet-C brightness: V <- clip(V + c), c = .1 .. .5, H and S kept (colorsys as the reference)."""
    c = [0.1, 0.2, 0.3, 0.4, 0.5][severity - 1]
    colors = [(100, 50, 25), (10, 200, 90), (0, 0, 0), (250, 250, 250), (30, 60, 240)]
    image = np.repeat(np.array(colors, dtype=np.uint8)[None], 40, axis=0)
    image = np.repeat(image, 8, axis=1)  # 40 x 40
    out = corrupt(image, "brightness", severity, seed=0)
    for k, rgb in enumerate(colors):
        h, s, v = colorsys.rgb_to_hsv(*(ch / 255 for ch in rgb))
        expected = np.array(colorsys.hsv_to_rgb(h, s, min(v + c, 1.0))) * 255
        np.testing.assert_allclose(out[0, 8 * k], expected, atol=1.0)
        assert (out[:, 8 * k] == out[0, 8 * k]).all()


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_contrast_shrinks_towards_the_channel_means(severity):
    c = [0.4, 0.3, 0.2, 0.1, 0.05][severity - 1]
    x = IMAGE / 255.0
    means = x.reshape(-1, 3).mean(axis=0)
    expected = ((x - means) * c + means) * 255
    np.testing.assert_allclose(corrupt(IMAGE, "contrast", severity, seed=0), expected, atol=1.0)


def test_gaussian_noise_statistics():
    """Additive N(0, c) in [0, 1] units, c = .08 .12 .18 .26 .38; uint8 truncation lowers the mean by 0.5."""
    gray = np.full((256, 256, 3), 128, np.uint8)
    stds = []
    for severity, c in zip(range(1, 6), [0.08, 0.12, 0.18, 0.26, 0.38], strict=True):
        residual = corrupt(gray, "gaussian_noise", severity, seed=severity).astype(float) - 128
        stds.append(residual.std())
        if severity <= 2:  # no clipping within 3 sigma of 128
            assert residual.std() == pytest.approx(c * 255, rel=0.02)
            assert residual.mean() == pytest.approx(-0.5, abs=0.3)
    assert stds == sorted(stds)


def test_more_fog_lowers_contrast():
    """Fog is x + c0 * plasma rescaled by max/(max + c0): the image's gain is 1/(1 + c0) when max = 1,
    c0 = 1.5, 2, 2.5, 2.5, 3 (ImageNet-C), whatever the (smooth, image-independent) plasma is."""
    x = np.zeros((128, 128), np.uint8)
    x[:, 0::4] = x[:, 1::4] = 255
    x[::2] //= 2
    image = np.stack([x] * 3, axis=-1)
    gains = []
    for severity, c0 in zip(range(1, 6), [1.5, 2.0, 2.5, 2.5, 3.0], strict=True):
        out = corrupt(image, "fog", severity, seed=3).astype(float).mean(axis=-1)
        gain = np.polyfit(x.ravel().astype(float), out.ravel(), 1)[0]
        assert gain == pytest.approx(1 / (1 + c0), abs=0.005)
        gains.append(gain)
    assert gains[0] > gains[1] > gains[2] and gains[3] > gains[4]
    assert corrupt(image, "fog", 5, seed=3).std() < corrupt(image, "fog", 1, seed=3).std()


def test_errors():
    with pytest.raises(ConfigError, match="unknown corruption 'haze'.*valid names: .*brightness.*fog"):
        corrupt(IMAGE, "haze", 3, seed=0)
    for severity in (0, 6, 2.5, True):
        with pytest.raises(ConfigError, match="severity must be an integer in 1..5"):
            corrupt(IMAGE, "fog", severity, seed=0)
    with pytest.raises(ValueError, match="at least 32x32"):
        corrupt(IMAGE[:16], "fog", 3, seed=0)
    with pytest.raises(ValueError, match="RGB uint8"):
        corrupt(IMAGE.astype(np.float32), "fog", 3, seed=0)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_darken_equals_a_colorsys_float64_reference(severity):
    """Night baseline: HSV value lowered by ImageNet-C's brightness shift, then ImageNet-C's contrast, computed
    here pixel by pixel with the standard library's colorsys."""
    import colorsys

    shift = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    factor = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    rng = np.random.default_rng(severity)
    image = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    dark = np.zeros(image.shape, np.float64)
    for y in range(32):
        for x in range(40):
            h, s, v = colorsys.rgb_to_hsv(*(image[y, x] / 255.0))
            dark[y, x] = colorsys.hsv_to_rgb(h, s, min(max(v - shift, 0.0), 1.0))
    means = dark.mean(axis=(0, 1))
    expected = np.round(np.clip((dark - means) * factor + means, 0, 1) * 255).astype(np.uint8)
    out = corrupt(image, "darken", severity, seed=0)
    assert np.abs(out.astype(int) - expected).max() <= 1  # HSV round trips differ by float rounding only
    assert (out == expected).mean() > 0.99
    assert out.mean() < image.mean()
