"""Unusual objects on the road (animals, crates, rocks) for the demo's Road Anomaly-layout OOD set."""

from __future__ import annotations

import cv2
import numpy as np

from synthrel.conventions import OOD_LABEL_ID
from synthrel.data.demo.canvas import Canvas, jitter


def paint_anomaly(c: Canvas, rng, road) -> None:
    """An unusual object on the road (an animal, a crate or a rock), labelled OOD_LABEL_ID."""
    z = rng.uniform(6, 30)
    x = rng.uniform(-road[0] + 0.8, road[1] - 0.8)
    kind = rng.choice(["animal", "box", "rock"])
    if kind == "animal":
        length, tall = rng.uniform(1.0, 2.2), rng.uniform(0.9, 1.6)
        shape = np.zeros((c.h, c.w), np.uint8)
        (u, v) = c.project(x, tall * 0.7, z)
        axes = (max(1, int(c.f * length / 2 / z)), max(1, int(c.f * tall * 0.22 / z)))
        cv2.ellipse(shape, (int(u), int(v)), axes, rng.uniform(-10, 10), 0, 360, 1, -1)
        head_side = rng.choice([-1, 1])
        hu, hv = c.project(x + head_side * length * 0.55, tall * 0.95, z)
        cv2.ellipse(shape, (int(hu), int(hv)), (max(1, int(c.f * 0.2 / z)), max(1, int(c.f * 0.14 / z))), 20, 0, 360,
                    1, -1)
        for dx in (-0.4, -0.3, 0.3, 0.4):
            leg = c.box(x + dx * length - 0.05, x + dx * length + 0.05, 0, tall * 0.6, z)
            cv2.fillPoly(shape, [np.round(leg).astype(np.int32)], 1)
        coat = [(0.45, 0.3, 0.15), (0.9, 0.88, 0.85), (0.1, 0.1, 0.1), (0.85, 0.65, 0.3)][rng.integers(4)]
        painted = c.paint(shape.astype(bool), OOD_LABEL_ID, z, jitter(rng, coat), texture=(0.1, 0.2, 0.1))
        if rng.random() < 0.5:  # stripes or patches
            pattern = np.sin((c.xs + 0.3 * c.ys) * rng.uniform(0.5, 1.2)) > 0.3
            c.color[painted & pattern] = 1 - np.asarray(coat, np.float32)
    elif kind == "box":
        size = rng.uniform(0.4, 1.2)
        face = c.box(x - size / 2, x + size / 2, 0, size, z)
        (_, top_v) = c.project(x, size * 1.25, z + size)
        top = np.array([face[0], face[1], [face[1][0] - 1, top_v], [face[0][0] + 1, top_v]], np.float32)
        colour = jitter(rng, (0.65, 0.48, 0.3), 0.15)
        c.paint(c.mask([top]), OOD_LABEL_ID, z, colour * 1.25, texture=(0.05, 0.1, 0.05))
        painted = c.paint(c.mask([face]), OOD_LABEL_ID, z, colour, texture=(0.05, 0.1, 0.05))
        u, _ = c.project(x, 0, z)
        c.color[painted & (np.abs(c.xs - u) < max(0.6, c.f * 0.05 / z))] = (0.85, 0.8, 0.6)  # tape
    else:
        size = rng.uniform(0.5, 1.3)
        u, v = c.project(x, 0, z)
        radius = c.f * size / 2 / z
        angles = np.sort(rng.uniform(0, np.pi, 7))
        pts = np.stack([u + radius * np.cos(angles) * rng.uniform(0.7, 1.2, 7),
                        v - radius * np.sin(angles) * rng.uniform(0.6, 1.4, 7)], 1)
        c.paint(c.mask([pts.astype(np.float32)]), OOD_LABEL_ID, z, jitter(rng, (0.5, 0.48, 0.45), 0.2),
                texture=(0.15, 0.25, 0.2), shade=0.4)
