"""Adverse conditions for the demo's real-shift sets, simulated on a rendered scene's depth and labels."""

from __future__ import annotations

import numpy as np

from synthrel.data import weather as physics
from synthrel.data.demo.canvas import ROAD, SIDEWALK, SKY, TERRAIN, VEGETATION
from synthrel.data.demo.scene import Scene


def apply_condition(scene: Scene, condition: str, rng: np.random.Generator) -> np.ndarray:
    """The scene's image under an adverse condition (float RGB); labels and geometry are unchanged."""
    if condition == "fog":
        return physics.fog(scene.image, scene.depth, rng)
    if condition == "night":
        return physics.night(scene.image, scene.depth, scene.label_ids == SKY, scene.windows, scene.lights, rng)
    if condition == "rain":
        return physics.rain(scene.image, scene.depth, rng)
    if condition == "snow":
        ground = np.isin(scene.label_ids, [ROAD, SIDEWALK, TERRAIN]).astype(np.float32)
        ground = np.maximum(ground, 0.5 * (scene.label_ids == VEGETATION))
        return physics.snow(scene.image, scene.depth, ground, rng)
    raise ValueError(f"unknown condition {condition!r}; valid: {', '.join(physics.CONDITIONS)}")
