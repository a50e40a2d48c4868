"""Where an object goes (supplementary A.3) and what the prompt says.

A box of side uniform in [1/4, 1/2] of the image's smaller side, uniformly placed in the bottom three
quarters (objects stand on the road, not in the sky), and a context box 1.5x its side centred on it,
clipped to the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONTEXT_SCALE = 1.5

#: Words that start with a vowel letter but a consonant sound ("a unicorn"), and silent-h words ("an hour").
_CONSONANT_SOUND_PREFIXES = ("uni", "use", "usu", "uti", "ure", "eu", "one", "once", "ewe")
_SILENT_H_PREFIXES = ("hour", "honest", "honor", "honour", "heir")


@dataclass(frozen=True)
class Box:
    """Pixel box [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def relative_to(self, outer: Box) -> Box:
        return Box(self.x0 - outer.x0, self.y0 - outer.y0, self.x1 - outer.x0, self.y1 - outer.y0)

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class Placement:
    """The object's box and its inpainting context in one image."""

    box: Box
    context: Box


def side_range(height: int, width: int) -> tuple[int, int]:
    """Inclusive integer range of box sides: [ceil(min/4), floor(min/2)]."""
    smaller = min(height, width)
    return math.ceil(smaller / 4), smaller // 2


def context_box(box: Box, height: int, width: int, scale: float = CONTEXT_SCALE) -> Box:
    """The box grown to `scale` times its side around its centre, clipped to the image."""
    side = int(round(scale * box.width))
    margin = (side - box.width) // 2
    x0, y0 = box.x0 - margin, box.y0 - margin
    return Box(max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height))


def sample_placement(rng: np.random.Generator, height: int, width: int) -> Placement:
    """Draw a box: side ~ U{ceil(min/4) .. floor(min/2)}, top edge ~ U{ceil(H/4) .. H - side},
    left edge ~ U{0 .. W - side} (the official code's integer draws, in the paper's proportions)."""
    if min(height, width) < 4:
        raise ValueError(f"image of {width}x{height} is too small to place an object")
    low, high = side_range(height, width)
    side = int(rng.integers(low, high + 1))
    top = int(rng.integers(math.ceil(height / 4), height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    box = Box(left, top, left + side, top + side)
    return Placement(box, context_box(box, height, width))


def article(name: str) -> str:
    """'a' or 'an' by the sound of the first letter: 'an elephant', 'a zebra', 'an hour', 'a unicorn'."""
    word = name.strip().lower()
    if word.startswith(_SILENT_H_PREFIXES):
        return "an"
    if word[:1] in "aeiou" and not word.startswith(_CONSONANT_SOUND_PREFIXES):
        return "an"
    return "a"


def format_prompt(template: str, name: str) -> str:
    """Fill a prompt template's {article} and {object} ("A photo of {article} {object}")."""
    return template.format(article=article(name), object=name)
