import math

import numpy as np
import pytest
from scipy import stats

from synthrel.ood_objects.placement import Box, article, context_box, format_prompt, sample_placement

PAPER_OBJECTS = [
    "arcade machine", "armchair", "baby", "bag", "bathtub", "bench", "billboard", "book", "bottle", "box",
    "chair", "cheetah", "chimpanzee", "clock", "computer", "desk", "dolphin", "elephant", "flamingo",
    "giraffe", "gorilla", "graffiti", "hippopotamus", "kangaroo", "koala", "lamp", "lion", "microwave",
    "mirror", "panda", "penguin", "pillow", "plate", "polar bear", "radiator", "refrigerator", "sofa",
    "table", "tiger", "toilet", "vase", "zebra",
]


def draws(height, width, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_placement(rng, height, width) for _ in range(n)]


def jittered_uniform(values, low, count, rng):
    """Discrete U{low .. low+count-1} plus U[0,1) noise, scaled: exactly U[0,1) when the law holds."""
    return (np.asarray(values) - low + rng.random(len(values))) / count


@pytest.mark.parametrize("height,width", [(1024, 2048), (64, 128)])
def test_box_side_and_position_follow_the_uniform_laws(height, width):
    placements = draws(height, width)
    rng = np.random.default_rng(1)
    sides = np.array([p.box.width for p in placements])
    smaller = min(height, width)
    side_low, side_high = math.ceil(smaller / 4), smaller // 2
    side_u = jittered_uniform(sides, side_low, side_high - side_low + 1, rng)
    assert stats.kstest(side_u, "uniform").pvalue > 1e-3
    # Given the side, top ~ U{ceil(H/4) .. H-side} and left ~ U{0 .. W-side}; mapped to U[0,1) item by item.
    top_u = [(p.box.y0 - math.ceil(height / 4) + r) / (height - p.box.width - math.ceil(height / 4) + 1)
             for p, r in zip(placements, rng.random(len(placements)), strict=True)]
    left_u = [(p.box.x0 + r) / (width - p.box.width + 1)
              for p, r in zip(placements, rng.random(len(placements)), strict=True)]
    assert stats.kstest(top_u, "uniform").pvalue > 1e-3
    assert stats.kstest(left_u, "uniform").pvalue > 1e-3


def test_a_biased_sampler_would_fail_the_ks_test():
    """The KS check has power: sides drawn from the lower half of the range are rejected."""
    rng = np.random.default_rng(0)
    biased = rng.integers(256, 385, 4000)
    assert stats.kstest(jittered_uniform(biased, 256, 257, rng), "uniform").pvalue < 1e-6


@pytest.mark.parametrize("height,width", [(1024, 2048), (64, 128), (200, 90)])
def test_boxes_are_square_inside_the_bottom_three_quarters(height, width):
    for p in draws(height, width, n=2000):
        box = p.box
        assert box.width == box.height
        assert 0.25 <= box.width / min(height, width) <= 0.5
        assert box.y0 >= height / 4 and box.y1 <= height
        assert box.x0 >= 0 and box.x1 <= width


def test_context_is_one_and_a_half_times_the_box_centred_and_clipped():
    inside = context_box(Box(100, 200, 200, 300), height=1024, width=2048)
    assert inside == Box(75, 175, 225, 325)
    clipped = context_box(Box(0, 924, 100, 1024), height=1024, width=2048)
    assert clipped == Box(0, 899, 125, 1024)
    for p in draws(64, 128, n=500):
        c, b = p.context, p.box
        assert c.x0 <= b.x0 and c.y0 <= b.y0 and c.x1 >= b.x1 and c.y1 >= b.y1
        assert c.x0 >= 0 and c.y0 >= 0 and c.x1 <= 128 and c.y1 <= 64


def test_article_for_the_42_paper_objects():
    expected_an = {"arcade machine", "armchair", "elephant"}
    assert {name for name in PAPER_OBJECTS if article(name) == "an"} == expected_an
    assert format_prompt("A photo of {article} {object}", "elephant") == "A photo of an elephant"
    assert format_prompt("A photo of {article} {object}", "polar bear") == "A photo of a polar bear"
    assert format_prompt("{object}", "polar bear") == "polar bear"


@pytest.mark.parametrize("word,expected", [("umbrella", "an"), ("unicorn", "a"), ("hour", "an"),
                                           ("horse", "a"), ("European bison", "a"), ("owl", "an"),
                                           ("one-wheeler", "a")])
def test_article_follows_the_sound_not_the_letter(word, expected):
    assert article(word) == expected
