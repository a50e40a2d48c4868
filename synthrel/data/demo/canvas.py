"""The demo renderer's drawing surface: a z-buffered canvas of labels, depth and colour with a pinhole camera."""

from __future__ import annotations

import cv2
import numpy as np

from synthrel.data.weather import Light, smooth_noise

# Cityscapes labelIds used by the renderer.
UNLABELED, EGO, STATIC = 0, 1, 4
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = 7, 8, 11, 12, 13, 17
LIGHT, SIGN, VEGETATION, TERRAIN, SKY = 19, 20, 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, CARAVAN, MOTORCYCLE, BICYCLE = 24, 25, 26, 27, 28, 29, 32, 33

CAMERA_HEIGHT = 1.5  # metres


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


FOCAL_PER_WIDTH = 0.9  # pinhole focal length in pixels per image width (fx = fy)


class Canvas:
    """Z-buffered painting of label, depth and colour; shapes are polygons in pixel coordinates."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, horizon: float, vanish_x: float):
        self.rng, self.w, self.h = rng, width, height
        self.f = FOCAL_PER_WIDTH * width
        self.horizon, self.vanish_x = horizon, vanish_x
        self.label = np.zeros((height, width), np.uint8)
        self.depth = np.full((height, width), np.inf, np.float32)
        self.color = np.zeros((height, width, 3), np.float32)
        self.windows = np.zeros((height, width), bool)
        self.lights: list[Light] = []
        self.ys, self.xs = np.mgrid[0:height, 0:width].astype(np.float32)
        # shared texture fields: coarse blotches, mid-scale grain and per-pixel grain
        self.noise = (smooth_noise(rng, (height, width), (4, 8)), smooth_noise(rng, (height, width), (16, 32)),
                      rng.standard_normal((height, width)).astype(np.float32))
        self._scratch = np.zeros((height, width), np.uint8)

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        """World point (lateral x, height y, distance z in metres) -> pixel (col, row)."""
        return self.vanish_x + self.f * x / z, self.horizon + self.f * (CAMERA_HEIGHT - y) / z

    def mask(self, polygons: list[np.ndarray]) -> np.ndarray:
        self._scratch[:] = 0
        cv2.fillPoly(self._scratch, [np.round(p * 16).astype(np.int32) for p in polygons], 1, cv2.LINE_8, 4)
        return self._scratch.astype(bool)

    def box(self, x0: float, x1: float, y0: float, y1: float, z: float) -> np.ndarray:
        """A world rectangle facing the camera at distance z (lateral x0..x1, heights y0..y1)."""
        (u0, v0), (u1, v1) = self.project(x0, y1, z), self.project(x1, y0, z)
        u1, v1 = max(u1, u0 + 1), max(v1, v0 + 1)  # at least one pixel wide
        return np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], np.float32)

    def paint(self, where: np.ndarray, label: int, depth, rgb, texture=(0.08, 0.05, 0.04), shade: float = 0.0,
              ) -> np.ndarray:
        """Paint `rgb` with noise `texture` (coarse, mid, fine amplitudes) where nearer than what is there.

        `shade` darkens towards the bottom of the painted region (ambient occlusion of upright things).
        """
        depth = np.broadcast_to(np.asarray(depth, np.float32), where.shape)
        visible = where & (depth <= self.depth)
        if not visible.any():
            return visible
        idx = np.nonzero(visible)
        gain = 1 + sum(a * n[idx] for a, n in zip(texture, self.noise, strict=True))
        if shade:
            rows = idx[0].astype(np.float32)
            gain = gain * (1 - shade * (rows - rows.min()) / max(1.0, rows.max() - rows.min()))
        self.color[idx] = np.asarray(rgb, np.float32)[None, :] * gain[:, None]
        self.label[idx] = label
        self.depth[idx] = depth[idx]
        return visible


def jitter(rng: np.random.Generator, rgb, amount: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) * rng.uniform(1 - amount, 1 + amount, 3), 0, 1)
