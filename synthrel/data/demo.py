"""A deterministic procedural street-scene dataset that stands in for the real datasets in the tiny profile.

`render_scene` draws a street seen from a car (road, sidewalks, facades, trees, poles, signs, lights, cars,
people, bicycles, the ego hood) with a pinhole camera over a flat ground plane, so each pixel has a class and
a metric depth. `DemoDataJob` writes a clean Cityscapes-layout set and "real shift" sets made from different
scenes by physical simulation (fog by Koschmieder's law on that depth, night, rain, snow) in the ACDC layout,
an "india" set in the IDD layout (level3Ids) and a Road Anomaly-layout OOD set with unusual objects on the road.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from synthrel.conventions import (
    IDD_LEVEL3_TO_TRAIN,
    OOD_LABEL_ID,
    TRAIN_TO_LABEL,
    label_ids_to_train_ids,
)
from synthrel.data import weather
from synthrel.data.io import write_jpg, write_png
from synthrel.data.weather import Light, smooth_noise
from synthrel.errors import ConfigError
from synthrel.jobs import item_rng, positive_int, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

# Cityscapes labelIds used by the renderer.
UNLABELED, EGO, STATIC = 0, 1, 4
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = 7, 8, 11, 12, 13, 17
LIGHT, SIGN, VEGETATION, TERRAIN, SKY = 19, 20, 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, CARAVAN, MOTORCYCLE, BICYCLE = 24, 25, 26, 27, 28, 29, 32, 33

TRAIN_CITIES = ("aachen", "bochum")
VAL_CITIES = ("frankfurt", "lindau", "munster")  # relis protocol: test = frankfurt, calibration = the others
# IDD train scenes: two of relis' 37 test scenes and one outside them, so that the idd_test split selects.
IDD_TRAIN_SCENES = ("265", "431", "1")
IDD_VAL_SCENES = ("100", "101")
CAMERA_HEIGHT = 1.5  # metres

# IDD level3Ids for the Cityscapes labelIds the renderer uses: the inverse of IDD_LEVEL3_TO_TRAIN, plus the
# IDD classes that have no Cityscapes trainId (terrain -> non-drivable fallback, caravan -> autorickshaw,
# static -> billboard); void labelIds stay 255.
LABEL_TO_IDD_LEVEL3 = np.full(256, 255, np.uint8)
for _level3, _train in enumerate(IDD_LEVEL3_TO_TRAIN[:27]):
    if _train != 255:
        LABEL_TO_IDD_LEVEL3[TRAIN_TO_LABEL[_train]] = _level3
LABEL_TO_IDD_LEVEL3[[TERRAIN, CARAVAN, STATIC]] = [3, 8, 17]


@dataclass
class Style:
    """Palette and clutter of a scene family ("cityscapes" German streets or "india")."""

    road: tuple = (0.36, 0.36, 0.38)
    sidewalk: tuple = (0.58, 0.55, 0.55)
    terrain: tuple = (0.45, 0.55, 0.25)
    facades: tuple = ((0.62, 0.58, 0.5), (0.5, 0.5, 0.52), (0.55, 0.33, 0.27), (0.75, 0.73, 0.68),
                      (0.4, 0.42, 0.45))
    cars: tuple = ((0.85, 0.85, 0.85), (0.1, 0.1, 0.12), (0.55, 0.56, 0.6), (0.5, 0.08, 0.08), (0.1, 0.2, 0.45))
    lane_marks: bool = True
    sidewalk_prob: float = 1.0
    persons: tuple = (0, 4)
    cars_count: tuple = (2, 7)
    motorcycles: tuple = (0, 1)
    autorickshaws: tuple = (0, 0)
    billboards: tuple = (0, 0)
    haze: float = 0.004  # beta of the mild clear-weather aerial perspective


CITYSCAPES_STYLE = Style()
INDIA_STYLE = Style(
    road=(0.42, 0.39, 0.35), sidewalk=(0.6, 0.52, 0.44), terrain=(0.55, 0.45, 0.33),
    facades=((0.85, 0.55, 0.6), (0.9, 0.8, 0.45), (0.45, 0.75, 0.75), (0.8, 0.7, 0.6), (0.65, 0.6, 0.5)),
    cars=((0.9, 0.9, 0.88), (0.75, 0.12, 0.1), (0.2, 0.35, 0.6), (0.6, 0.6, 0.58)),
    lane_marks=False, sidewalk_prob=0.4, persons=(4, 10), cars_count=(1, 4), motorcycles=(2, 6),
    autorickshaws=(1, 3), billboards=(1, 3), haze=0.012,
)


@dataclass
class Scene:
    image: np.ndarray  # float RGB in [0, 1]
    label_ids: np.ndarray  # Cityscapes labelIds (uint8)
    depth: np.ndarray  # metres, inf for the sky
    windows: np.ndarray  # bool, window panes (lit at night)
    lights: list[Light] = field(default_factory=list)

    def to_uint8(self) -> np.ndarray:
        return to_uint8(self.image)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


class _Canvas:
    """Z-buffered painting of label, depth and colour; shapes are polygons in pixel coordinates."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, horizon: float, vanish_x: float):
        self.rng, self.w, self.h = rng, width, height
        self.f = 0.9 * width
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


def _jitter(rng: np.random.Generator, rgb, amount: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) * rng.uniform(1 - amount, 1 + amount, 3), 0, 1)


def render_scene(rng: np.random.Generator, width: int = 256, height: int = 128, style: Style = CITYSCAPES_STYLE,
                 anomalies: int = 0) -> Scene:
    """Draw one random street scene; `anomalies` unusual objects (labelled OOD_LABEL_ID) stand on the road."""
    c = _Canvas(rng, width, height, horizon=height * rng.uniform(0.4, 0.5), vanish_x=width * rng.uniform(0.4, 0.6))
    road = (rng.uniform(3.5, 7.0), rng.uniform(3.5, 7.0))  # left and right half widths
    has_sidewalk = rng.random() < style.sidewalk_prob
    walk = (rng.uniform(2.0, 4.0), rng.uniform(2.0, 4.0)) if has_sidewalk else (0.0, 0.0)
    strip = tuple(rng.uniform(1.0, 4.0) if rng.random() < 0.5 else 0.0 for _ in range(2))
    building_line = tuple(road[i] + walk[i] + strip[i] + rng.uniform(0.5, 2.0) for i in range(2))
    far = rng.uniform(70, 130)

    _sky(c, rng)
    _ground(c, rng, style, road, walk, building_line)
    for side in (-1, 1):
        _facades(c, rng, style, side, building_line[(side + 1) // 2], far)
        _trees(c, rng, side, road[(side + 1) // 2] + walk[(side + 1) // 2] - 0.6, strip[(side + 1) // 2], far)
        _poles(c, rng, side, road[(side + 1) // 2] + 0.4)
    _end_building(c, rng, style, building_line, far)
    _traffic(c, rng, style, road, walk)
    for attempt in range(anomalies + 5 if anomalies else 0):
        if attempt >= anomalies and (c.label == OOD_LABEL_ID).any():
            break  # retry only while every anomaly is hidden behind traffic
        _anomaly(c, rng, road)
    _ego_hood(c, rng)

    haze = np.exp(-style.haze * np.minimum(c.depth, 400))[..., None]
    image = c.color * haze + np.array([0.75, 0.78, 0.82], np.float32) * (1 - haze)
    image = cv2.GaussianBlur(image, (0, 0), 0.5) * rng.uniform(0.85, 1.15)
    image += rng.normal(0, 0.01, image.shape).astype(np.float32)
    return Scene(np.clip(image, 0, 1), c.label, c.depth, c.windows, c.lights)


def _sky(c: _Canvas, rng: np.random.Generator) -> None:
    t = np.clip(c.ys / max(c.horizon, 1), 0, 1)[..., None]
    top, bottom = _jitter(rng, (0.35, 0.55, 0.85), 0.15), _jitter(rng, (0.78, 0.84, 0.9), 0.05)
    sky = top * (1 - t) + bottom * t
    clouds = np.clip(smooth_noise(rng, (c.h, c.w), (3, 6)) * 0.5 + rng.uniform(-0.3, 0.4), 0, 1)[..., None]
    c.color[:] = sky * (1 - clouds) + np.array([0.9, 0.9, 0.92], np.float32) * clouds
    c.label[:] = SKY


def _ground(c: _Canvas, rng, style: Style, road, walk, building_line) -> None:
    below = c.ys > c.horizon + 0.5
    z = np.where(below, c.f * CAMERA_HEIGHT / np.maximum(c.ys - c.horizon, 0.5), np.inf).astype(np.float32)
    finite_z = np.where(below, z, 0)  # ground coordinates (metres) for the paving and lane patterns
    x = (c.xs - c.vanish_x) * finite_z / c.f
    is_road = below & (x >= -road[0]) & (x <= road[1])
    is_walk = below & ~is_road & (x >= -road[0] - walk[0]) & (x <= road[1] + walk[1])
    is_terrain = below & ~is_road & ~is_walk
    c.paint(is_terrain, TERRAIN, z, _jitter(rng, style.terrain), texture=(0.12, 0.15, 0.12))
    walk_colour = _jitter(rng, style.sidewalk)
    c.paint(is_walk, SIDEWALK, z, walk_colour, texture=(0.05, 0.04, 0.04))
    tiles = is_walk & ((np.abs(np.mod(finite_z, 1.0) - 0.5) > 0.45) | (np.abs(np.mod(x, 1.0) - 0.5) > 0.45))
    c.color[tiles] *= 0.82
    curb = is_walk & ((np.abs(x + road[0]) < 0.2) | (np.abs(x - road[1]) < 0.2))
    c.color[curb] = walk_colour * 1.2
    c.paint(is_road, ROAD, z, _jitter(rng, style.road), texture=(0.06, 0.05, 0.07))
    if style.lane_marks:
        centre = (road[1] - road[0]) / 2
        marks = is_road & (((np.abs(x - centre) < 0.08) & (np.mod(finite_z, 9) < 4.5))
                           | (np.abs(x + road[0] - 0.2) < 0.08) | (np.abs(x - road[1] + 0.2) < 0.08))
        c.color[marks] = np.array([0.85, 0.85, 0.82], np.float32)


def _facades(c: _Canvas, rng, style: Style, side: int, line: float, far: float) -> None:
    """Facades along one side of the street: building blocks, with walls, fences and gaps."""
    x_plane = side * line
    offset = c.xs - c.vanish_x
    # depth and height of every pixel on the facade plane (computed once for the whole side)
    plane_z = np.where(side * offset > 0.5, c.f * x_plane / np.where(offset == 0, 1, offset), far)
    plane_height = CAMERA_HEIGHT - (c.ys - c.horizon) * plane_z / c.f
    pitch = rng.uniform(2.5, 4.0)
    panes_pattern = (np.mod(plane_z, pitch) > 0.9) & (np.mod(plane_height, 3.2) > 1.2) & (plane_height > 2.6)
    lit = 1.0 if side < 0 else 0.75  # the sun lights the left facades
    z = rng.uniform(3.0, 6.0)
    while z < far:
        z1 = min(z + rng.uniform(6, 20), far)
        kind = rng.choice(["building", "wall", "fence", "gap"], p=[0.72, 0.1, 0.08, 0.1])
        if kind != "gap":
            top = {"building": rng.uniform(7, 24), "wall": rng.uniform(1.2, 2.8), "fence": rng.uniform(1.0, 2.0)}[kind]
            corners = [c.project(x_plane, 0, z), c.project(x_plane, top, z), c.project(x_plane, top, z1),
                       c.project(x_plane, 0, z1)]
            where = c.mask([np.array(corners, np.float32)])
            depth = np.clip(plane_z, z, z1)
            if kind == "building":
                colour = _jitter(rng, style.facades[rng.integers(len(style.facades))]) * lit
                painted = c.paint(where, BUILDING, depth, colour, texture=(0.08, 0.06, 0.05))
                panes = painted & panes_pattern & (plane_height < top - 0.6)
                c.color[panes] = _jitter(rng, (0.2, 0.25, 0.3), 0.3) * (1 + 0.3 * c.noise[1][panes, None])
                c.windows |= panes
            elif kind == "wall":
                c.paint(where, WALL, depth, _jitter(rng, (0.6, 0.58, 0.55)) * lit, texture=(0.1, 0.08, 0.06))
            else:
                painted = c.paint(where, FENCE, depth, _jitter(rng, (0.45, 0.4, 0.35)) * lit, texture=(0.05, 0.1, 0.1))
                c.color[painted & (np.mod(plane_z, 0.5) < 0.12)] *= 0.6  # slats
        z = z1


def _end_building(c: _Canvas, rng, style: Style, building_line, far: float) -> None:
    x = -building_line[0] - 15
    while x < building_line[1] + 15:
        width = rng.uniform(6, 20)
        if rng.random() < 0.8:
            box = c.box(x, x + width, 0, rng.uniform(8, 30), far)
            colour = _jitter(rng, style.facades[rng.integers(len(style.facades))])
            c.paint(c.mask([box]), BUILDING, far, colour, texture=(0.05, 0.05, 0.05))
        x += width


def _trees(c: _Canvas, rng, side: int, x_edge: float, strip: float, far: float) -> None:
    for _ in range(rng.integers(0, 7)):
        zt = rng.uniform(6, far * 0.7)
        xt = side * (x_edge + rng.uniform(0, strip + 0.3))
        trunk = c.box(xt - 0.15, xt + 0.15, 0, 3.0, zt)
        c.paint(c.mask([trunk]), VEGETATION, zt, _jitter(rng, (0.3, 0.22, 0.15)), texture=(0.05, 0.1, 0.1))
        crown = rng.uniform(1.5, 3.2)
        cx, cy = c.project(xt, 3.0 + crown, zt)
        canopy = np.zeros((c.h, c.w), np.uint8)
        for _ in range(6):
            r = c.f * crown * rng.uniform(0.5, 0.8) / zt
            ox, oy = rng.normal(0, 0.45 * c.f * crown / zt, 2)
            cv2.circle(canopy, (int(cx + ox), int(cy + oy)), max(1, int(r)), 1, -1)
        c.paint(canopy.astype(bool), VEGETATION, zt, _jitter(rng, (0.25, 0.4, 0.15), 0.2),
                texture=(0.1, 0.2, 0.25), shade=0.4)
    if strip and rng.random() < 0.5:  # a hedge along the strip
        z0 = rng.uniform(5, 20)
        xh = side * (x_edge + strip * 0.5)
        corners = [c.project(xh, 0, z0), c.project(xh, 1.1, z0), c.project(xh, 1.1, z0 + 15),
                   c.project(xh, 0, z0 + 15)]
        c.paint(c.mask([np.array(corners, np.float32)]), VEGETATION, z0 + 7, _jitter(rng, (0.2, 0.35, 0.12)),
                texture=(0.1, 0.2, 0.25))


def _poles(c: _Canvas, rng, side: int, x_pole: float) -> None:
    for _ in range(rng.integers(1, 5)):
        zp = rng.uniform(5, 60)
        xp = side * x_pole
        height = rng.uniform(4, 8)
        grey = _jitter(rng, (0.45, 0.45, 0.47))
        c.paint(c.mask([c.box(xp - 0.08, xp + 0.08, 0, height, zp)]), POLE, zp, grey, texture=(0.02, 0.03, 0.05))
        kind = rng.choice(["sign", "light", "lamp", "plain"])
        if kind == "sign":
            y = height - rng.uniform(0.5, 2.5)
            board = c.box(xp - 0.35, xp + 0.35, y - 0.35, y + 0.35, zp - 0.05)
            colour = [(0.8, 0.1, 0.1), (0.1, 0.25, 0.7), (0.9, 0.8, 0.1), (0.9, 0.9, 0.9)][rng.integers(4)]
            if rng.random() < 0.5:
                (u, v), r = c.project(xp, y, zp), c.f * 0.35 / zp
                sign = np.zeros((c.h, c.w), np.uint8)
                cv2.circle(sign, (int(u), int(v)), max(1, int(r)), 1, -1)
                painted = c.paint(sign.astype(bool), SIGN, zp - 0.05, colour)
                c.color[painted & ((c.xs - u) ** 2 + (c.ys - v) ** 2 < (0.6 * r) ** 2)] = (0.95, 0.95, 0.95)
            else:
                c.paint(c.mask([board]), SIGN, zp - 0.05, colour)
        elif kind == "light":
            y = height - 0.5
            housing = c.paint(c.mask([c.box(xp - 0.18, xp + 0.18, y - 0.9, y, zp - 0.05)]), LIGHT, zp - 0.05,
                              (0.12, 0.12, 0.1))
            lamp = rng.integers(3)
            u, v = c.project(xp, y - 0.15 - 0.3 * lamp, zp)
            colour = [(1.0, 0.15, 0.1), (1.0, 0.7, 0.1), (0.2, 1.0, 0.4)][lamp]
            c.color[housing & ((c.xs - u) ** 2 + (c.ys - v) ** 2 < (c.f * 0.12 / zp) ** 2)] = colour
            c.lights.append(Light(u, v, c.f * 0.15 / zp, colour))
        elif kind == "lamp":
            arm_end = xp - side * 1.2
            c.paint(c.mask([c.box(min(xp, arm_end), max(xp, arm_end), height - 0.12, height, zp)]), POLE, zp, grey)
            u, v = c.project(arm_end, height - 0.2, zp)
            c.lights.append(Light(u, v, c.f * 0.4 / zp, (1.0, 0.8, 0.5), lights_ground=True))


def _traffic(c: _Canvas, rng, style: Style, road, walk) -> None:
    """Cars, trucks/buses, autorickshaws and motorcycles on the road; people and bicycles on the sidewalks."""
    lanes = [-road[0] / 2, road[1] / 2, -road[0] + 1.1, road[1] - 1.1]
    for _ in range(rng.integers(*style.cars_count)):
        _vehicle(c, rng, lanes[rng.integers(4)], rng.uniform(6, 70), style.cars, CAR, 1.8, 1.45)
    if rng.random() < 0.2:
        kind = rng.choice([TRUCK, BUS])
        _vehicle(c, rng, lanes[rng.integers(2)], rng.uniform(12, 60), ((0.8, 0.75, 0.2), (0.7, 0.7, 0.72)), kind,
                 2.5, 3.3)
    for _ in range(rng.integers(*style.autorickshaws, endpoint=True)):
        _vehicle(c, rng, lanes[rng.integers(4)], rng.uniform(6, 40), ((0.1, 0.45, 0.15), (0.85, 0.75, 0.1)),
                 CARAVAN, 1.3, 1.7)
    for _ in range(rng.integers(*style.persons, endpoint=True)):
        side = rng.choice([-1, 1])
        width = walk[(side + 1) // 2] or 1.5
        x = side * (road[(side + 1) // 2] + rng.uniform(0.3, width))
        _person(c, rng, x, rng.uniform(5, 40), PERSON)
    for _ in range(rng.integers(0, 3)):
        side = rng.choice([-1, 1])
        x = side * (road[(side + 1) // 2] - rng.uniform(0.5, 1.2))
        _two_wheeler(c, rng, x, rng.uniform(6, 40), BICYCLE, ridden=rng.random() < 0.7)
    for _ in range(rng.integers(*style.motorcycles, endpoint=True)):
        _two_wheeler(c, rng, lanes[rng.integers(4)], rng.uniform(6, 40), MOTORCYCLE, ridden=True)
    for _ in range(rng.integers(0, 3)):  # bins (static) and rubbish (unlabeled) on the sidewalk
        side = rng.choice([-1, 1])
        x = side * (road[(side + 1) // 2] + rng.uniform(0.3, max(walk[(side + 1) // 2], 0.5)))
        z = rng.uniform(5, 30)
        label = STATIC if rng.random() < 0.6 else UNLABELED
        c.paint(c.mask([c.box(x - 0.3, x + 0.3, 0, 1.0 if label == STATIC else 0.4, z)]), label, z,
                _jitter(rng, (0.2, 0.35, 0.25) if label == STATIC else (0.4, 0.35, 0.3), 0.3), shade=0.3)
    for _ in range(rng.integers(*style.billboards, endpoint=True)):  # hoardings beside the road (static)
        side = rng.choice([-1, 1])
        x = side * (road[(side + 1) // 2] + walk[(side + 1) // 2] + 0.5)
        z = rng.uniform(8, 40)
        c.paint(c.mask([c.box(x - 1.5, x + 1.5, 2.0, 4.0, z)]), STATIC, z, _jitter(rng, (0.8, 0.3, 0.5), 0.5),
                texture=(0.3, 0.3, 0.1))


def _vehicle(c: _Canvas, rng, x: float, z: float, palette, label: int, width: float, height: float) -> None:
    """A vehicle seen from behind, with its side face visible when it is off the optical axis."""
    colour = _jitter(rng, palette[rng.integers(len(palette))], 0.1)
    half = width / 2
    if abs(x) > half:  # side face (plane x - sign*half) from z to z + length
        xs = x - np.sign(x) * half
        length = 2.2 * height if label in (TRUCK, BUS) else 4.3
        corners = [c.project(xs, 0.25, z), c.project(xs, height * 0.7, z), c.project(xs, height * 0.7, z + length),
                   c.project(xs, 0.25, z + length)]
        c.paint(c.mask([np.array(corners, np.float32)]), label, z + length / 2, colour * 0.8, shade=0.3)
    body = c.box(x - half, x + half, 0.25, height * 0.7, z)
    cabin_w = half * 0.8
    cabin = np.array([c.project(x - cabin_w, height * 0.7, z), c.project(x - cabin_w * 0.85, height, z),
                      c.project(x + cabin_w * 0.85, height, z), c.project(x + cabin_w, height * 0.7, z)], np.float32)
    painted = c.paint(c.mask([body, cabin]), label, z, colour, texture=(0.03, 0.04, 0.03), shade=0.35)
    window = c.mask([c.box(x - cabin_w * 0.8, x + cabin_w * 0.8, height * 0.74, height * 0.95, z)])
    c.color[painted & window] = np.array([0.12, 0.14, 0.17], np.float32)
    for sx in (-1, 1):
        wheel = c.box(x + sx * half * 0.85 - 0.15, x + sx * half * 0.85 + 0.15, 0, 0.35, z)
        c.paint(c.mask([wheel]), label, z, (0.05, 0.05, 0.05))
        u, v = c.project(x + sx * (half - 0.2), height * 0.55, z)
        tail = painted & ((c.xs - u) ** 2 + (c.ys - v) ** 2 < max(0.6, c.f * 0.12 / z) ** 2)
        c.color[tail] = (0.8, 0.05, 0.05)
        c.lights.append(Light(u, v, c.f * 0.1 / z, (1.0, 0.1, 0.05)))


def _person(c: _Canvas, rng, x: float, z: float, label: int, base: float = 0.0) -> None:
    tall = rng.uniform(1.55, 1.95)
    shirt = rng.uniform(0.05, 0.9, 3)
    trousers = _jitter(rng, (0.15, 0.15, 0.25), 0.4)
    for sx in (-0.12, 0.12):  # legs
        c.paint(c.mask([c.box(x + sx - 0.07, x + sx + 0.07, base, base + tall * 0.48, z)]), label, z, trousers)
    c.paint(c.mask([c.box(x - 0.22, x + 0.22, base + tall * 0.46, base + tall * 0.84, z)]), label, z, shirt,
            shade=0.3)
    (u, v), r = c.project(x, base + tall * 0.92, z), c.f * 0.11 / z
    head = np.zeros((c.h, c.w), np.uint8)
    cv2.circle(head, (int(u), int(v)), max(1, int(round(r))), 1, -1)
    c.paint(head.astype(bool), label, z, _jitter(rng, (0.75, 0.55, 0.45), 0.3))


def _two_wheeler(c: _Canvas, rng, x: float, z: float, label: int, ridden: bool) -> None:
    """A bicycle or motorcycle in side view, with its rider (label rider) when ridden."""
    drawing = np.zeros((c.h, c.w), np.uint8)
    wheel_r = c.f * (0.34 if label == BICYCLE else 0.32) / z
    (u0, v0), (u1, v1) = c.project(x - 0.55, 0.34, z), c.project(x + 0.55, 0.34, z)
    thick = max(1, int(round(c.f * 0.05 / z)))
    fill = -1 if label == MOTORCYCLE else thick
    for u in (u0, u1):
        cv2.circle(drawing, (int(u), int(v0)), max(1, int(wheel_r)), 1, fill)
    (ua, va) = c.project(x, 0.9, z)
    cv2.line(drawing, (int(u0), int(v0)), (int(ua), int(va)), 1, thick)
    cv2.line(drawing, (int(ua), int(va)), (int(u1), int(v1)), 1, thick)
    if label == MOTORCYCLE:
        cv2.ellipse(drawing, (int(ua), int(va)), (max(1, int(c.f * 0.5 / z)), max(1, int(c.f * 0.2 / z))), 0, 0, 360,
                    1, -1)
    c.paint(drawing.astype(bool), label, z, _jitter(rng, (0.15, 0.15, 0.2), 0.5))
    if ridden:
        _person(c, rng, x, z - 0.1, RIDER, base=0.55)


def _anomaly(c: _Canvas, rng, road) -> None:
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
        painted = c.paint(shape.astype(bool), OOD_LABEL_ID, z, _jitter(rng, coat), texture=(0.1, 0.2, 0.1))
        if rng.random() < 0.5:  # stripes or patches
            pattern = np.sin((c.xs + 0.3 * c.ys) * rng.uniform(0.5, 1.2)) > 0.3
            c.color[painted & pattern] = 1 - np.asarray(coat, np.float32)
    elif kind == "box":
        size = rng.uniform(0.4, 1.2)
        face = c.box(x - size / 2, x + size / 2, 0, size, z)
        (_, top_v) = c.project(x, size * 1.25, z + size)
        top = np.array([face[0], face[1], [face[1][0] - 1, top_v], [face[0][0] + 1, top_v]], np.float32)
        colour = _jitter(rng, (0.65, 0.48, 0.3), 0.15)
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
        c.paint(c.mask([pts.astype(np.float32)]), OOD_LABEL_ID, z, _jitter(rng, (0.5, 0.48, 0.45), 0.2),
                texture=(0.15, 0.25, 0.2), shade=0.4)


def _ego_hood(c: _Canvas, rng) -> None:
    rise = c.h * rng.uniform(0.05, 0.09)
    xs = np.linspace(0, c.w, 17)
    top = c.h - rise * (1 - 0.35 * ((xs - c.w / 2) / (c.w / 2)) ** 2)
    hood = np.concatenate([np.stack([xs, top], 1), [[c.w, c.h], [0, c.h]]]).astype(np.float32)
    c.paint(c.mask([hood]), EGO, 1.0, _jitter(rng, (0.12, 0.12, 0.14), 0.3), texture=(0.02, 0.05, 0.05))


def apply_condition(scene: Scene, condition: str, rng: np.random.Generator) -> np.ndarray:
    """The scene's image under an adverse condition (float RGB); labels and geometry are unchanged."""
    if condition == "fog":
        return weather.fog(scene.image, scene.depth, rng)
    if condition == "night":
        return weather.night(scene.image, scene.depth, scene.label_ids == SKY, scene.windows, scene.lights, rng)
    if condition == "rain":
        return weather.rain(scene.image, scene.depth, rng)
    if condition == "snow":
        ground = np.isin(scene.label_ids, [ROAD, SIDEWALK, TERRAIN]).astype(np.float32)
        ground = np.maximum(ground, 0.5 * (scene.label_ids == VEGETATION))
        return weather.snow(scene.image, scene.depth, ground, rng)
    raise ValueError(f"unknown condition {condition!r}; valid: {', '.join(weather.CONDITIONS)}")


@dataclass
class DemoDataJob:
    """Write the demo datasets under `root` (the tiny profile's data_dir):

    cityscapes/ (clean train and val), ACDC/ (fog, night, rain, snow; train and val, `n_shift` images each),
    IDD_Segmentation/ (train and val, `n_shift` images each), RoadAnomaly/ (`n_ood` frames).
    The folders carry the relis protocol splits (conf/dataset/protocol_splits.yaml): Cityscapes val cities
    frankfurt / munster / lindau, ACDC train and val scenes, IDD train scenes in and out of the 37 test ones.
    """

    root: str
    seed: int = 0
    image_size: list[int] = field(default_factory=lambda: [256, 128])
    n_train: int = 24
    n_val: int = 12
    n_shift: int = 8
    n_ood: int = 8
    force: bool = False

    MARKER = ".synthrel_demo_data.json"
    SUBDIRS = ("cityscapes", "ACDC", "IDD_Segmentation", "RoadAnomaly")

    def __post_init__(self):
        for key in ("n_train", "n_val", "n_shift", "n_ood"):
            positive_int(getattr(self, key), f"stages.demo_data.{key}")
        if len(self.image_size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 32
                                            for v in self.image_size):
            raise ConfigError(f"`stages.demo_data.image_size` must be [W, H] with integers >= 32, "
                              f"got {self.image_size!r}")
        self.root = Path(self.root)

    @property
    def params(self) -> dict:
        return {"seed": self.seed, "image_size": list(self.image_size), "n_train": self.n_train,
                "n_val": self.n_val, "n_shift": self.n_shift, "n_ood": self.n_ood}

    def run(self) -> dict:
        marker = self.root / self.MARKER
        previous = json.loads(marker.read_text()) if marker.exists() else None
        if previous and previous.get("status") == "complete" and previous["params"] == self.params and not self.force:
            log.info("demo data already complete under %s (seed %s); skipping", self.root, self.seed)
            return {"data_dir": str(self.root), "skipped": True}
        self._clear(previous)
        write_json_atomic(marker, {"status": "writing", "params": self.params})
        counts = self._write_all()
        write_json_atomic(marker, {"status": "complete", "params": self.params, "counts": counts})
        return {"data_dir": str(self.root), "skipped": False, **counts}

    def _clear(self, previous: dict | None) -> None:
        """Remove an earlier demo set; refuse to touch folders that demo_data did not write (real data)."""
        existing = [self.root / d for d in self.SUBDIRS if (self.root / d).exists()]
        if existing and previous is None:
            raise ConfigError(
                f"{existing[0]} exists but was not written by demo_data (no {self.MARKER} in {self.root}); "
                f"refusing to overwrite what may be a real dataset. Point `stages.demo_data.root` "
                f"(paths.data_dir, e.g. with profile=tiny) at another folder"
            )
        for path in existing:
            shutil.rmtree(path)

    def _write_all(self) -> dict:
        width, height = self.image_size
        counts = {}
        jobs = [("cityscapes", split, n) for split, n in (("train", self.n_train), ("val", self.n_val))]
        jobs += [(f"acdc_{cond}", split, self.n_shift) for cond in weather.CONDITIONS for split in ("train", "val")]
        jobs += [("idd", split, self.n_shift) for split in ("train", "val")]
        jobs += [("road_anomaly", "test", self.n_ood)]
        total = sum(n for *_, n in jobs)
        with tqdm(total=total, desc=f"demo data (seed {self.seed})", unit="img") as bar:
            for dataset, split, n in jobs:
                for index in range(n):
                    self._write_one(dataset, split, index, width, height)
                    bar.update()
                counts[f"{dataset}_{split}"] = n
        write_text_atomic(self.root / "RoadAnomaly" / "frame_list.json",
                          json.dumps([f"{self._frame_name(i)}.jpg" for i in range(self.n_ood)], indent=1) + "\n")
        return counts

    @staticmethod
    def _frame_name(index: int) -> str:
        return f"demo_anomaly_{index:03d}"

    def _write_one(self, dataset: str, split: str, index: int, width: int, height: int) -> None:
        rng = item_rng(self.seed, index, f"{dataset}/{split}")
        if dataset == "cityscapes":
            cities = TRAIN_CITIES if split == "train" else VAL_CITIES
            city = cities[index % len(cities)]
            scene = render_scene(rng, width, height)
            base = f"{city}_{index // len(cities):06d}_{19 + index:06d}"
            write_png(self.root / "cityscapes" / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png",
                      scene.to_uint8())
            gt = self.root / "cityscapes" / "gtFine" / split / city
            write_png(gt / f"{base}_gtFine_labelIds.png", scene.label_ids)
            write_png(gt / f"{base}_gtFine_labelTrainIds.png", label_ids_to_train_ids(scene.label_ids))
        elif dataset.startswith("acdc_"):
            condition = dataset[len("acdc_"):]
            scene = render_scene(rng, width, height)
            first = (0 if split == "train" else 500) + 10 * weather.CONDITIONS.index(condition)
            sequence = f"GOPR{first + index // 4:04d}"
            base = f"{sequence}_frame_{index:06d}"
            write_png(self.root / "ACDC" / "rgb_anon" / condition / split / sequence / f"{base}_rgb_anon.png",
                      to_uint8(apply_condition(scene, condition, rng)))
            gt = self.root / "ACDC" / "gt" / condition / split / sequence
            write_png(gt / f"{base}_gt_labelIds.png", scene.label_ids)
            write_png(gt / f"{base}_gt_labelTrainIds.png", label_ids_to_train_ids(scene.label_ids))
        elif dataset == "idd":
            scene = render_scene(rng, width, height, style=INDIA_STYLE)
            scenes = IDD_TRAIN_SCENES if split == "train" else IDD_VAL_SCENES
            folder = scenes[index % len(scenes)]
            base = f"{index:06d}"
            write_png(self.root / "IDD_Segmentation" / "leftImg8bit" / split / folder / f"{base}_leftImg8bit.png",
                      scene.to_uint8())
            write_png(self.root / "IDD_Segmentation" / "gtFine" / split / folder / f"{base}_gtFine_labellevel3Ids.png",
                      LABEL_TO_IDD_LEVEL3[scene.label_ids])
        else:
            scene = render_scene(rng, width, height, anomalies=int(rng.integers(1, 3)))
            frames = self.root / "RoadAnomaly" / "frames"
            name = self._frame_name(index)
            write_jpg(frames / f"{name}.jpg", scene.to_uint8())
            write_png(frames / f"{name}.labels" / "labels_semantic.png",
                      np.where(scene.label_ids == OOD_LABEL_ID, 2, 0).astype(np.uint8))
