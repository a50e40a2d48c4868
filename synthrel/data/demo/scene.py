"""`render_scene`: one random street seen from a car, with a class and a metric depth for every pixel."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from synthrel.conventions import OOD_LABEL_ID
from synthrel.data.demo.anomalies import paint_anomaly
from synthrel.data.demo.canvas import (
    BICYCLE,
    BUILDING,
    BUS,
    CAMERA_HEIGHT,
    CAR,
    CARAVAN,
    EGO,
    FENCE,
    LIGHT,
    MOTORCYCLE,
    PERSON,
    POLE,
    RIDER,
    ROAD,
    SIDEWALK,
    SIGN,
    SKY,
    STATIC,
    TERRAIN,
    TRUCK,
    UNLABELED,
    VEGETATION,
    WALL,
    Canvas,
    jitter,
    to_uint8,
)
from synthrel.data.weather import Light, smooth_noise


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


def render_scene(rng: np.random.Generator, width: int = 256, height: int = 128, style: Style = CITYSCAPES_STYLE,
                 anomalies: int = 0) -> Scene:
    """Draw one random street scene; `anomalies` unusual objects (labelled OOD_LABEL_ID) stand on the road."""
    c = Canvas(rng, width, height, horizon=height * rng.uniform(0.4, 0.5), vanish_x=width * rng.uniform(0.4, 0.6))
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
        paint_anomaly(c, rng, road)
    _ego_hood(c, rng)

    haze = np.exp(-style.haze * np.minimum(c.depth, 400))[..., None]
    image = c.color * haze + np.array([0.75, 0.78, 0.82], np.float32) * (1 - haze)
    image = cv2.GaussianBlur(image, (0, 0), 0.5) * rng.uniform(0.85, 1.15)
    image += rng.normal(0, 0.01, image.shape).astype(np.float32)
    return Scene(np.clip(image, 0, 1), c.label, c.depth, c.windows, c.lights)


def _sky(c: Canvas, rng: np.random.Generator) -> None:
    t = np.clip(c.ys / max(c.horizon, 1), 0, 1)[..., None]
    top, bottom = jitter(rng, (0.35, 0.55, 0.85), 0.15), jitter(rng, (0.78, 0.84, 0.9), 0.05)
    sky = top * (1 - t) + bottom * t
    clouds = np.clip(smooth_noise(rng, (c.h, c.w), (3, 6)) * 0.5 + rng.uniform(-0.3, 0.4), 0, 1)[..., None]
    c.color[:] = sky * (1 - clouds) + np.array([0.9, 0.9, 0.92], np.float32) * clouds
    c.label[:] = SKY


def _ground(c: Canvas, rng, style: Style, road, walk, building_line) -> None:
    below = c.ys > c.horizon + 0.5
    z = np.where(below, c.f * CAMERA_HEIGHT / np.maximum(c.ys - c.horizon, 0.5), np.inf).astype(np.float32)
    finite_z = np.where(below, z, 0)  # ground coordinates (metres) for the paving and lane patterns
    x = (c.xs - c.vanish_x) * finite_z / c.f
    is_road = below & (x >= -road[0]) & (x <= road[1])
    is_walk = below & ~is_road & (x >= -road[0] - walk[0]) & (x <= road[1] + walk[1])
    is_terrain = below & ~is_road & ~is_walk
    c.paint(is_terrain, TERRAIN, z, jitter(rng, style.terrain), texture=(0.12, 0.15, 0.12))
    walk_colour = jitter(rng, style.sidewalk)
    c.paint(is_walk, SIDEWALK, z, walk_colour, texture=(0.05, 0.04, 0.04))
    tiles = is_walk & ((np.abs(np.mod(finite_z, 1.0) - 0.5) > 0.45) | (np.abs(np.mod(x, 1.0) - 0.5) > 0.45))
    c.color[tiles] *= 0.82
    curb = is_walk & ((np.abs(x + road[0]) < 0.2) | (np.abs(x - road[1]) < 0.2))
    c.color[curb] = walk_colour * 1.2
    c.paint(is_road, ROAD, z, jitter(rng, style.road), texture=(0.06, 0.05, 0.07))
    if style.lane_marks:
        centre = (road[1] - road[0]) / 2
        marks = is_road & (((np.abs(x - centre) < 0.08) & (np.mod(finite_z, 9) < 4.5))
                           | (np.abs(x + road[0] - 0.2) < 0.08) | (np.abs(x - road[1] + 0.2) < 0.08))
        c.color[marks] = np.array([0.85, 0.85, 0.82], np.float32)


def _facades(c: Canvas, rng, style: Style, side: int, line: float, far: float) -> None:
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
                colour = jitter(rng, style.facades[rng.integers(len(style.facades))]) * lit
                painted = c.paint(where, BUILDING, depth, colour, texture=(0.08, 0.06, 0.05))
                panes = painted & panes_pattern & (plane_height < top - 0.6)
                c.color[panes] = jitter(rng, (0.2, 0.25, 0.3), 0.3) * (1 + 0.3 * c.noise[1][panes, None])
                c.windows |= panes
            elif kind == "wall":
                c.paint(where, WALL, depth, jitter(rng, (0.6, 0.58, 0.55)) * lit, texture=(0.1, 0.08, 0.06))
            else:
                painted = c.paint(where, FENCE, depth, jitter(rng, (0.45, 0.4, 0.35)) * lit, texture=(0.05, 0.1, 0.1))
                c.color[painted & (np.mod(plane_z, 0.5) < 0.12)] *= 0.6  # slats
        z = z1


def _end_building(c: Canvas, rng, style: Style, building_line, far: float) -> None:
    x = -building_line[0] - 15
    while x < building_line[1] + 15:
        width = rng.uniform(6, 20)
        if rng.random() < 0.8:
            box = c.box(x, x + width, 0, rng.uniform(8, 30), far)
            colour = jitter(rng, style.facades[rng.integers(len(style.facades))])
            c.paint(c.mask([box]), BUILDING, far, colour, texture=(0.05, 0.05, 0.05))
        x += width


def _trees(c: Canvas, rng, side: int, x_edge: float, strip: float, far: float) -> None:
    for _ in range(rng.integers(0, 7)):
        zt = rng.uniform(6, far * 0.7)
        xt = side * (x_edge + rng.uniform(0, strip + 0.3))
        trunk = c.box(xt - 0.15, xt + 0.15, 0, 3.0, zt)
        c.paint(c.mask([trunk]), VEGETATION, zt, jitter(rng, (0.3, 0.22, 0.15)), texture=(0.05, 0.1, 0.1))
        crown = rng.uniform(1.5, 3.2)
        cx, cy = c.project(xt, 3.0 + crown, zt)
        canopy = np.zeros((c.h, c.w), np.uint8)
        for _ in range(6):
            r = c.f * crown * rng.uniform(0.5, 0.8) / zt
            ox, oy = rng.normal(0, 0.45 * c.f * crown / zt, 2)
            cv2.circle(canopy, (int(cx + ox), int(cy + oy)), max(1, int(r)), 1, -1)
        c.paint(canopy.astype(bool), VEGETATION, zt, jitter(rng, (0.25, 0.4, 0.15), 0.2),
                texture=(0.1, 0.2, 0.25), shade=0.4)
    if strip and rng.random() < 0.5:  # a hedge along the strip
        z0 = rng.uniform(5, 20)
        xh = side * (x_edge + strip * 0.5)
        corners = [c.project(xh, 0, z0), c.project(xh, 1.1, z0), c.project(xh, 1.1, z0 + 15),
                   c.project(xh, 0, z0 + 15)]
        c.paint(c.mask([np.array(corners, np.float32)]), VEGETATION, z0 + 7, jitter(rng, (0.2, 0.35, 0.12)),
                texture=(0.1, 0.2, 0.25))


def _poles(c: Canvas, rng, side: int, x_pole: float) -> None:
    for _ in range(rng.integers(1, 5)):
        zp = rng.uniform(5, 60)
        xp = side * x_pole
        height = rng.uniform(4, 8)
        grey = jitter(rng, (0.45, 0.45, 0.47))
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


def _traffic(c: Canvas, rng, style: Style, road, walk) -> None:
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
                jitter(rng, (0.2, 0.35, 0.25) if label == STATIC else (0.4, 0.35, 0.3), 0.3), shade=0.3)
    for _ in range(rng.integers(*style.billboards, endpoint=True)):  # hoardings beside the road (static)
        side = rng.choice([-1, 1])
        x = side * (road[(side + 1) // 2] + walk[(side + 1) // 2] + 0.5)
        z = rng.uniform(8, 40)
        c.paint(c.mask([c.box(x - 1.5, x + 1.5, 2.0, 4.0, z)]), STATIC, z, jitter(rng, (0.8, 0.3, 0.5), 0.5),
                texture=(0.3, 0.3, 0.1))


def _vehicle(c: Canvas, rng, x: float, z: float, palette, label: int, width: float, height: float) -> None:
    """A vehicle seen from behind, with its side face visible when it is off the optical axis."""
    colour = jitter(rng, palette[rng.integers(len(palette))], 0.1)
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


def _person(c: Canvas, rng, x: float, z: float, label: int, base: float = 0.0) -> None:
    tall = rng.uniform(1.55, 1.95)
    shirt = rng.uniform(0.05, 0.9, 3)
    trousers = jitter(rng, (0.15, 0.15, 0.25), 0.4)
    for sx in (-0.12, 0.12):  # legs
        c.paint(c.mask([c.box(x + sx - 0.07, x + sx + 0.07, base, base + tall * 0.48, z)]), label, z, trousers)
    c.paint(c.mask([c.box(x - 0.22, x + 0.22, base + tall * 0.46, base + tall * 0.84, z)]), label, z, shirt,
            shade=0.3)
    (u, v), r = c.project(x, base + tall * 0.92, z), c.f * 0.11 / z
    head = np.zeros((c.h, c.w), np.uint8)
    cv2.circle(head, (int(u), int(v)), max(1, int(round(r))), 1, -1)
    c.paint(head.astype(bool), label, z, jitter(rng, (0.75, 0.55, 0.45), 0.3))


def _two_wheeler(c: Canvas, rng, x: float, z: float, label: int, ridden: bool) -> None:
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
    c.paint(drawing.astype(bool), label, z, jitter(rng, (0.15, 0.15, 0.2), 0.5))
    if ridden:
        _person(c, rng, x, z - 0.1, RIDER, base=0.55)


def _ego_hood(c: Canvas, rng) -> None:
    rise = c.h * rng.uniform(0.05, 0.09)
    xs = np.linspace(0, c.w, 17)
    top = c.h - rise * (1 - 0.35 * ((xs - c.w / 2) / (c.w / 2)) ** 2)
    hood = np.concatenate([np.stack([xs, top], 1), [[c.w, c.h], [0, c.h]]]).astype(np.float32)
    c.paint(c.mask([hood]), EGO, 1.0, jitter(rng, (0.12, 0.12, 0.14), 0.3), texture=(0.02, 0.05, 0.05))
