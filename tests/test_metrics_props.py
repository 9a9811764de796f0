"Property tests of `saliency_r1.metrics` (hypothesis): the box metrics against independent exact references."
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from saliency_r1.data import Box
from saliency_r1.metrics import (cell_coverage, cell_coverage_batch, energy_pointing_game, energy_pointing_game_batch,
                                 pointing_game, pointing_game_batch)

# Examples per test come from the profile of tests/conftest.py ("ci": derandomized; `make fuzz`: fresh and many more).


@st.composite
def boxes_st(draw, min_size=1, max_size=3):
    "Normalized boxes with x2 > x1 and y2 > y1; coordinates often on simple fractions to hit cell edges exactly."
    coord = st.one_of(st.floats(0, 1, allow_nan=False), st.sampled_from([0, 0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1]))
    out = []
    for _ in range(draw(st.integers(min_size, max_size))):
        x = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
        y = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
        if x[1] - x[0] < 1e-9 or y[1] - y[0] < 1e-9: continue
        out.append(Box(x[0], y[0], x[1], y[1]))
    return out or [Box(0.2, 0.3, 0.6, 0.9)]

grids = st.tuples(st.integers(1, 6), st.integers(1, 6))
values = st.one_of(st.just(0.0), st.floats(1e-6, 100), st.sampled_from([1.0, 2.0]))   # ties are common on purpose
maps = grids.flatmap(lambda g: arrays(np.float64, g, elements=values))


def _inter(boxes, rect):
    "Area of the intersection of `boxes` and `rect`, all as [x1, y1, x2, y2]."
    x1 = max([rect[0]] + [b[0] for b in boxes]); y1 = max([rect[1]] + [b[1] for b in boxes])
    x2 = min([rect[2]] + [b[2] for b in boxes]); y2 = min([rect[3]] + [b[3] for b in boxes])
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def union_area(boxes, rect=(0, 0, 1, 1)):
    "Exact area of the union of `boxes` inside `rect` by inclusion-exclusion (independent of the library)."
    b = [x.to_list() for x in boxes]
    return sum((-1) ** (k + 1) * _inter(list(sub), rect) for k in range(1, len(b) + 1) for sub in combinations(b, k))


@given(boxes_st(), grids)
def test_coverage_matches_inclusion_exclusion(boxes, grid):
    gh, gw = grid
    cover = cell_coverage(boxes, grid)
    ref = [[union_area(boxes, (c / gw, r / gh, (c + 1) / gw, (r + 1) / gh)) * gh * gw for c in range(gw)] for r in range(gh)]
    np.testing.assert_allclose(cover, ref, atol=1e-9)
    assert ((cover >= 0) & (cover <= 1)).all()
    assert cover.mean() == pytest.approx(union_area(boxes), abs=1e-9)


@given(boxes_st(), grids)
def test_union_with_itself_is_the_box(boxes, grid):
    np.testing.assert_allclose(cell_coverage(boxes + boxes, grid), cell_coverage(boxes, grid), atol=1e-12)
    np.testing.assert_allclose(cell_coverage(boxes[:1] * 3, grid), cell_coverage(boxes[:1], grid), atol=1e-12)


@given(maps, boxes_st())
def test_energy_in_unit_interval(s, boxes):
    e = energy_pointing_game(s, boxes)
    assert 0.0 <= e <= 1.0
    if s.sum() == 0: assert e == 0.0


@given(maps, boxes_st(), st.floats(1e-3, 1e3))
def test_energy_invariant_to_scaling(s, boxes, c):
    assert energy_pointing_game(s * c, boxes) == pytest.approx(energy_pointing_game(s, boxes), abs=1e-9)


@given(maps)
def test_whole_image_box_scores_one(s):
    expected = 1.0 if s.sum() > 0 else 0.0
    assert energy_pointing_game(s, [0, 0, 1, 1]) == pytest.approx(expected)
    assert pointing_game(s, [0, 0, 1, 1]) == (s.max() > s.min())


@given(grids, boxes_st())
def test_uniform_map_scores_union_area(grid, boxes):
    assert energy_pointing_game(np.ones(grid), boxes) == pytest.approx(union_area(boxes), abs=1e-9)


@given(st.lists(st.tuples(maps, boxes_st(min_size=0)), min_size=1, max_size=6))
def test_batch_forms_agree_with_single(rows):
    ms, bs = [m for m, _ in rows], [b for _, b in rows]
    energy, hits = energy_pointing_game_batch(ms, bs), pointing_game_batch(ms, bs)
    for m, b, e, h in zip(ms, bs, energy, hits):
        if not b: assert np.isnan(e) and np.isnan(h); continue
        assert e == pytest.approx(energy_pointing_game(m, b), abs=1e-12)
        assert h == float(pointing_game(m, b))
    same = [m.shape == ms[0].shape for m in ms]
    if all(same):
        np.testing.assert_allclose(cell_coverage_batch(bs, ms[0].shape), np.stack([cell_coverage(b, ms[0].shape) for b in bs]))


@given(maps, boxes_st(), st.floats(0, 50), st.tuples(st.integers(10, 500), st.integers(10, 500)))
def test_pointing_tolerance_is_monotone(s, boxes, tol, size):
    "A hit stays a hit as the tolerance grows."
    if pointing_game(s, boxes, tolerance=tol, image_size=size):
        assert pointing_game(s, boxes, tolerance=tol + 10, image_size=size)
    if pointing_game(s, boxes): assert pointing_game(s, boxes, tolerance=tol, image_size=size)


@given(maps, boxes_st(), st.floats(1e-300, 1e300))
def test_energy_invariant_to_any_finite_scaling(s, boxes, c):
    "Issue 12: maps are divided by their maximum before summing, so huge (1e308) or tiny values neither overflow nor vanish."
    scaled = s * c
    if not np.isfinite(scaled).all(): return
    e = energy_pointing_game(scaled, boxes)
    assert 0.0 <= e <= 1.0
    if (scaled > 0).any() == (s > 0).any() and np.count_nonzero(scaled) == np.count_nonzero(s):
        assert e == pytest.approx(energy_pointing_game(s, boxes), abs=1e-9)


@given(grids, boxes_st())
def test_uniform_map_of_the_largest_floats_scores_union_area(grid, boxes):
    assert energy_pointing_game(np.full(grid, np.finfo(np.float64).max), boxes) == pytest.approx(union_area(boxes), abs=1e-9)
