"""Physically motivated adverse-condition simulation for the demo's "real shift" sets.

Images are float RGB in [0, 1] (H, W, 3); `depth` is metres along the view (inf for the sky). Each function
takes its random draws from the generator it is given, so a seeded generator gives identical output.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Light:
    """A light source in image coordinates, for night scenes: radius in pixels, colour in [0, 1]."""

    x: float
    y: float
    radius: float
    color: tuple[float, float, float]
    lights_ground: bool = False  # street lamps throw a pool of light on the scene below them


def koschmieder(image: np.ndarray, depth: np.ndarray, beta: float, airlight) -> np.ndarray:
    """Koschmieder's law I = J t + A (1 - t) with transmission t = exp(-beta d) (t = 0 at infinite depth)."""
    t = np.exp(-beta * np.asarray(depth, dtype=np.float32))[..., None]
    return image * t + np.asarray(airlight, dtype=np.float32) * (1.0 - t)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Zero-mean, unit-std noise that varies over about `cells` (rows, cols) blobs across the frame."""
    coarse = rng.standard_normal(cells).astype(np.float32)
    field = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def fog(image: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dense homogeneous fog: visibility (3 / beta) of 30-60 m, so distant objects vanish into the airlight."""
    beta = rng.uniform(0.05, 0.1)
    airlight = np.array([0.78, 0.80, 0.82], np.float32) * rng.uniform(0.9, 1.05)
    foggy = koschmieder(image, depth, beta, airlight)
    return cv2.GaussianBlur(foggy, (0, 0), 0.8)


def night(image: np.ndarray, depth: np.ndarray, sky: np.ndarray, windows: np.ndarray, lights: list[Light],
          rng: np.random.Generator) -> np.ndarray:
    """Night: low exposure with a dark sky, lamps that light the ground and glow, lit windows, sensor noise."""
    h, w = depth.shape
    dark = image ** 1.3 * rng.uniform(0.06, 0.11)
    dark[sky] = np.array([0.015, 0.02, 0.04], np.float32) * rng.uniform(0.6, 1.4)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    pools = np.zeros((h, w, 3), np.float32)
    glow = np.zeros((h, w, 3), np.float32)
    for light in lights:
        r2 = (xs - light.x) ** 2 + (ys - light.y) ** 2
        glow += np.exp(-r2 / (2 * (1.2 * light.radius + 0.5) ** 2))[..., None] * np.array(light.color, np.float32)
        if not light.lights_ground:
            continue
        # the lit pool on the scene below the lamp (wide and flat, as on the ground)
        spread = 6 * light.radius + 3
        pools += (np.exp(-((xs - light.x) ** 2) / (2 * spread ** 2) - ((ys - light.y - 3 * spread) ** 2)
                         / (2 * (2 * spread) ** 2)))[..., None] * np.array(light.color, np.float32)
    lit_windows = windows & (smooth_noise(rng, (h, w), (8, 16)) > 0.4)
    out = dark + image * pools * 0.5 + glow * 0.7
    out[lit_windows] = out[lit_windows] * 0.3 + np.array([0.55, 0.45, 0.25], np.float32)
    out = out + rng.normal(0, 1, out.shape).astype(np.float32) * (0.015 + 0.04 * np.sqrt(np.clip(out, 0, 1)))
    return cv2.GaussianBlur(out, (0, 0), 0.6)


def rain(image: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rain: overcast darkening and desaturation, veiling haze, motion-blurred streaks, lens drops, blur."""
    h, w = depth.shape
    grey = image.mean(axis=2, keepdims=True)
    out = (0.45 * image + 0.55 * grey) * rng.uniform(0.55, 0.7)
    out = koschmieder(out, depth, rng.uniform(0.015, 0.03), np.array([0.5, 0.52, 0.55], np.float32))
    out = cv2.GaussianBlur(out, (0, 0), 1.0)
    streaks = np.zeros((h, w), np.float32)
    angle = np.deg2rad(rng.uniform(-15, 15))
    for _ in range(int(h * w / 150)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        length = rng.uniform(0.06, 0.16) * h
        x2, y2 = x + length * np.sin(angle), y + length * np.cos(angle)
        cv2.line(streaks, (int(x), int(y)), (int(x2), int(y2)), float(rng.uniform(0.2, 0.55)), 1, cv2.LINE_AA)
    out = out + cv2.GaussianBlur(streaks, (0, 0), 0.7)[..., None] * np.array([0.85, 0.88, 0.92], np.float32)
    blurred = cv2.GaussianBlur(out, (0, 0), 4.0)
    drops = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(4, 10))):
        cv2.circle(drops, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(rng.uniform(0.04, 0.1) * h), 1.0, -1)
    drops = cv2.GaussianBlur(drops, (0, 0), 2.0)[..., None]
    return out * (1 - drops) + blurred * drops


def snow(image: np.ndarray, depth: np.ndarray, ground: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Snow: white cover on the ground classes, bright haze, falling flakes and a cold tint."""
    h, w = depth.shape
    coverage = np.clip(0.75 + 0.35 * smooth_noise(rng, (h, w), (12, 24)), 0, 1) * ground
    fine = 0.9 + 0.06 * rng.standard_normal((h, w)).astype(np.float32)
    snow_colour = np.array([0.92, 0.94, 0.97], np.float32) * fine[..., None]
    out = image * (1 - coverage[..., None]) + snow_colour * coverage[..., None]
    out = out * np.array([0.92, 0.96, 1.05], np.float32)
    out = koschmieder(out, depth, rng.uniform(0.03, 0.05), np.array([0.86, 0.88, 0.92], np.float32))
    flakes = np.zeros((h, w), np.float32)
    for _ in range(int(h * w / 60)):
        radius = int(rng.choice([0, 0, 1, 1, 2]))
        cv2.circle(flakes, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), radius, float(rng.uniform(0.5, 1)),
                   -1)
    flakes = np.clip(cv2.GaussianBlur(flakes, (0, 0), 0.6), 0, 1)[..., None]
    return out * (1 - flakes) + flakes * 0.97


CONDITIONS = ("fog", "night", "rain", "snow")
