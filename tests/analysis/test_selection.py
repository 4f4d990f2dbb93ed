"""Box, lasso and range selection, and combining selections: the fast lasso must equal the reference."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.selection import (
    box_mask,
    combine,
    lasso_mask,
    mask_to_indices,
    range_mask,
    ray_casting_mask_reference,
)

# ----------------------------------------------------------------------------- polygons


def _star(n_points: int, rng: np.random.Generator, centre=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """A concave star: alternate radii around the centre."""
    t = np.linspace(0, 2 * np.pi, 2 * n_points, endpoint=False)
    r = np.where(np.arange(2 * n_points) % 2 == 0, 1.0, rng.uniform(0.2, 0.6))
    return centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)


def _random_walk_polygon(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Vertices in random order: self-intersecting almost everywhere."""
    return rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)


def _hand_lasso(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A wobbly closed curve, like a lasso drawn by hand."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1 + 0.3 * np.sin(5 * t + rng.uniform(0, 6)) + 0.05 * rng.normal(size=n)
    return r * np.cos(t), r * np.sin(t)


FIGURE_EIGHT = (np.array([-1.0, 1.0, 1.0, -1.0]), np.array([-1.0, 1.0, -1.0, 1.0]))  # a bow-tie
SQUARE = (np.array([0.0, 2.0, 2.0, 0.0]), np.array([0.0, 0.0, 2.0, 2.0]))


def _points(n: int, rng: np.random.Generator, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(-1.3, 1.3, n).astype(dtype), rng.uniform(-1.3, 1.3, n).astype(dtype)


def _assert_same(x, y, px, py):
    fast = lasso_mask(x, y, px, py)
    ref = ray_casting_mask_reference(x, y, px, py)
    assert fast.dtype == np.bool_ and fast.shape == x.shape
    np.testing.assert_array_equal(fast, ref)
    return fast


# ----------------------------------------------------------------------------- lasso vs reference


@pytest.mark.parametrize("seed", range(12))
def test_lasso_matches_reference_on_random_polygons(seed):
    rng = np.random.default_rng(seed)
    x, y = _points(20_000, rng)
    for px, py in (
        _star(rng.integers(3, 40), rng),
        _random_walk_polygon(int(rng.integers(3, 60)), rng),
        _hand_lasso(int(rng.integers(50, 600)), rng),
        (np.cos(np.linspace(0, 2 * np.pi, 7)), np.sin(np.linspace(0, 2 * np.pi, 7))),  # convex, closed
    ):
        _assert_same(x, y, px, py)


def test_lasso_bow_tie_excludes_nothing_in_its_loops_and_is_even_odd():
    x = np.array([-0.5, 0.5, 0.0, 0.0, 0.9], dtype=np.float64)
    y = np.array([0.0, 0.0, 0.5, -0.5, 0.0])
    mask = _assert_same(x, y, *FIGURE_EIGHT)
    # The bow-tie's two loops are left and right; above and below the crossing is outside.
    np.testing.assert_array_equal(mask, [True, True, False, False, True])


def test_lasso_overlapping_loops_are_outside_under_even_odd():
    # A path that goes round the unit square twice: every interior point is crossed twice → outside.
    px = np.array([0, 1, 1, 0, 0, 1, 1, 0], dtype=float)
    py = np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=float)
    x = np.array([0.5, 0.25]), np.array([0.5, 0.75])
    assert not _assert_same(x[0], x[1], px, py).any()


def test_lasso_points_on_vertices_edges_and_a_grid_aligned_with_them():
    # Integer-vertex polygons and points on a half-integer grid hit vertices, edges (horizontal,
    # vertical, diagonal) and vertex rows exactly: the hardest cases for agreement.
    rng = np.random.default_rng(3)
    gx, gy = np.meshgrid(np.arange(-4, 4.5, 0.5), np.arange(-4, 4.5, 0.5))
    x, y = gx.ravel(), gy.ravel()
    polygons = [
        SQUARE,
        FIGURE_EIGHT,
        (np.array([0, 3, 3, 1, 1, 3, 3, 0.0]), np.array([0, 0, 1, 1, 2, 2, 3, 3.0])),  # a concave "C"
        (np.array([-3, 0, 3, 0.0]), np.array([0, 3, 0, -3.0])),  # a diamond: diagonal edges through grid points
    ]
    for _ in range(20):
        k = int(rng.integers(3, 12))
        polygons.append((rng.integers(-4, 5, k).astype(float), rng.integers(-4, 5, k).astype(float)))
    for px, py in polygons:
        _assert_same(x, y, px, py)
        _assert_same(x.astype(np.float32), y.astype(np.float32), px, py)


def test_lasso_edge_rule_for_an_axis_aligned_square():
    # Documented rule: left and bottom edges inside, right and top edges outside; corners follow.
    x = np.array([0.0, 2.0, 1.0, 1.0, 0.0, 2.0, 2.0, 0.0, 1.0])
    y = np.array([1.0, 1.0, 0.0, 2.0, 0.0, 0.0, 2.0, 2.0, 1.0])
    mask = _assert_same(x, y, *SQUARE)
    np.testing.assert_array_equal(mask, [True, False, True, False, True, False, False, False, True])


def test_lasso_duplicate_and_closing_vertices_change_nothing():
    rng = np.random.default_rng(5)
    x, y = _points(5_000, rng)
    px, py = _hand_lasso(100, rng)
    base = _assert_same(x, y, px, py)
    dup_x, dup_y = np.repeat(px, 2), np.repeat(py, 2)  # every vertex twice
    np.testing.assert_array_equal(_assert_same(x, y, dup_x, dup_y), base)
    closed = _assert_same(x, y, np.append(px, px[0]), np.append(py, py[0]))
    np.testing.assert_array_equal(closed, base)


def test_lasso_points_exactly_on_polygon_vertices_and_edge_midpoints():
    rng = np.random.default_rng(11)
    px, py = _hand_lasso(300, rng)
    mid_x = (px + np.roll(px, -1)) / 2
    mid_y = (py + np.roll(py, -1)) / 2
    x = np.concatenate([px, mid_x, rng.uniform(-1.5, 1.5, 1000)])
    y = np.concatenate([py, mid_y, rng.uniform(-1.5, 1.5, 1000)])
    _assert_same(x, y, px, py)


@pytest.mark.parametrize("seed", range(4))
def test_lasso_points_within_rounding_of_edges(seed):
    # Points on the edges, rounded to float32: each lies within an ulp of an edge, on either side.
    rng = np.random.default_rng(seed)
    px, py = _hand_lasso(int(rng.integers(20, 400)), rng)
    k = rng.integers(0, px.size, 20_000)
    t = rng.uniform(0, 1, k.size)
    x = (px[k] + t * (np.roll(px, -1)[k] - px[k])).astype(np.float32)
    y = (py[k] + t * (np.roll(py, -1)[k] - py[k])).astype(np.float32)
    _assert_same(x, y, px, py)
    _assert_same(x.astype(np.float64), y.astype(np.float64), px.astype(np.float32), py.astype(np.float32))


def test_lasso_tiny_polygon_far_from_the_origin():
    # Cells barely wider than the coordinates' rounding: the grid's slack must still cover it.
    rng = np.random.default_rng(8)
    px, py = _hand_lasso(200, rng)
    px, py = 1e6 + 1e-7 * px, -3e5 + 1e-7 * py
    x = 1e6 + 1.3e-7 * rng.uniform(-1, 1, 20_000)
    y = -3e5 + 1.3e-7 * rng.uniform(-1, 1, 20_000)
    k = rng.integers(0, px.size, 5_000)
    t = rng.uniform(0, 1, k.size)
    x = np.concatenate([x, px[k] + t * (np.roll(px, -1)[k] - px[k])])
    y = np.concatenate([y, py[k] + t * (np.roll(py, -1)[k] - py[k])])
    assert 0.2 < _assert_same(x, y, px, py).mean() < 0.8


def test_lasso_on_memory_mapped_and_strided_coordinates(tmp_path):
    rng = np.random.default_rng(1)
    coords = rng.normal(size=(10_000, 2)).astype(np.float32)
    path = tmp_path / "xy.npy"
    np.save(path, coords)
    mm = np.load(path, mmap_mode="r")
    px, py = _hand_lasso(200, rng)
    fast = lasso_mask(mm[:, 0], mm[:, 1], px, py)  # strided columns of a memory-map
    np.testing.assert_array_equal(fast, ray_casting_mask_reference(coords[:, 0], coords[:, 1], px, py))


def test_lasso_degenerate_polygons_select_nothing():
    x, y = _points(100, np.random.default_rng(0))
    assert not lasso_mask(x, y, [], []).any()
    assert not lasso_mask(x, y, [0.0], [0.0]).any()
    assert not lasso_mask(x, y, [0.0, 1.0], [0.0, 1.0]).any()
    assert not ray_casting_mask_reference(x, y, [0.0, 1.0], [0.0, 1.0]).any()
    # Zero-area polygons with three or more vertices: no crash, and the reference's answer.
    _assert_same(x, y, np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0]))  # collinear diagonal
    _assert_same(x, y, np.array([0.0, 0.5, 1.0]), np.zeros(3))  # horizontal line
    _assert_same(x, y, np.zeros(3), np.array([0.0, 0.5, 1.0]))  # vertical line
    _assert_same(x, y, np.zeros(4), np.zeros(4))  # a single point


def test_lasso_empty_and_full_selections():
    rng = np.random.default_rng(2)
    x, y = _points(1_000, rng)
    assert not lasso_mask(x, y, [5, 6, 6], [5, 5, 6]).any()
    assert lasso_mask(x, y, [-2, 2, 2, -2], [-2, -2, 2, 2]).all()
    assert lasso_mask(x[:0], y[:0], [-2, 2, 2], [-2, -2, 2]).shape == (0,)


def test_lasso_errors_name_the_problem():
    x, y = _points(10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="different lengths"):
        lasso_mask(x, y[:5], [0, 1, 1], [0, 0, 1])
    with pytest.raises(ValueError, match="polygon_xs and polygon_ys"):
        lasso_mask(x, y, [0, 1, 1], [0, 0])
    with pytest.raises(ValueError, match="NaN or infinite vertex"):
        lasso_mask(x, y, [0, np.nan, 1], [0, 0, 1])
    bad = x.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="1 of 10 points have a NaN coordinate"):
        lasso_mask(bad, y, [-2, 2, 2], [-2, -2, 2])
    assert not lasso_mask(bad, y, [-2, 2, 2, -2], [-2, -2, 2, 2], on_nan="exclude")[3]
    with pytest.raises(ValueError, match="NaN coordinate"):
        lasso_mask(bad, y, [0, 1], [0, 1])  # even for a degenerate polygon


# ----------------------------------------------------------------------------- box and range


def test_box_mask_is_inclusive_in_any_corner_order():
    x = np.array([0.0, 1.0, 2.0, 1.0, 3.0], dtype=np.float32)
    y = np.array([0.0, 1.0, 2.0, 2.5, 1.0], dtype=np.float32)
    expected = [True, True, True, False, False]
    for bounds in ((0, 0, 2, 2), (2, 2, 0, 0), (0, 2, 2, 0), (2, 0, 0, 2)):
        np.testing.assert_array_equal(box_mask(x, y, bounds), expected)


def test_box_mask_matches_numpy_and_checks_inputs():
    rng = np.random.default_rng(0)
    x, y = _points(10_000, rng)
    got = box_mask(x, y, (0.3, -0.2, -0.1, 0.4))
    np.testing.assert_array_equal(got, (x >= -0.1) & (x <= 0.3) & (y >= -0.2) & (y <= 0.4))
    with pytest.raises(ValueError, match="different lengths"):
        box_mask(x, y[:-1], (0, 0, 1, 1))
    with pytest.raises(ValueError, match="finite"):
        box_mask(x, y, (0, 0, np.nan, 1))
    bad = y.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="NaN coordinate"):
        box_mask(x, bad, (0, 0, 1, 1))
    assert not box_mask(x, bad, (-5, -5, 5, 5), on_nan="exclude")[0]


def test_range_mask_excludes_nan_and_accepts_open_sides():
    v = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    np.testing.assert_array_equal(range_mask(v, 2, 4), [False, True, False, True, False])
    np.testing.assert_array_equal(range_mask(v, 4, 2), [False, True, False, True, False])
    np.testing.assert_array_equal(range_mask(v, None, 2), [True, True, False, False, False])
    np.testing.assert_array_equal(range_mask(v, 4, None), [False, False, False, True, True])
    np.testing.assert_array_equal(range_mask(v), [True, True, False, True, True])
    np.testing.assert_array_equal(range_mask(np.array([0, 1, 2], dtype=np.int8), 1, 1), [False, True, False])


# ----------------------------------------------------------------------------- combining


def test_combine_modes_match_set_algebra():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = np.sort(rng.choice(1000, rng.integers(0, 300), replace=False)).astype(np.int64)
        b = np.sort(rng.choice(1000, rng.integers(0, 300), replace=False)).astype(np.int64)
        np.testing.assert_array_equal(combine(a, b, "new"), b)
        np.testing.assert_array_equal(combine(a, b, "add"), np.union1d(a, b))
        np.testing.assert_array_equal(combine(a, b, "intersect"), np.intersect1d(a, b))
        np.testing.assert_array_equal(combine(a, b, "subtract"), np.setdiff1d(a, b))
        for mode in ("new", "add", "intersect", "subtract"):
            out = combine(a, b, mode)
            assert out.dtype == np.int64
            assert np.all(np.diff(out) > 0)


def test_combine_sorts_unsorted_input_and_handles_empties():
    np.testing.assert_array_equal(combine([3, 1], np.array([5, 2, 2, 9]), "add"), [1, 2, 3, 5, 9])
    empty = np.array([], dtype=np.int64)
    assert combine(empty, empty, "add").size == 0
    np.testing.assert_array_equal(combine([1, 2], empty, "subtract"), [1, 2])
    assert combine([1, 2], empty, "intersect").size == 0
    assert combine(empty, [1, 2], "intersect").size == 0
    with pytest.raises(ValueError, match="mode must be one of"):
        combine([1], [2], "xor")
    with pytest.raises(ValueError, match="mask_to_indices"):
        combine([1], np.array([True, False]), "add")


def test_mask_to_indices():
    got = mask_to_indices(np.array([False, True, True, False, True]))
    np.testing.assert_array_equal(got, [1, 2, 4])
    assert got.dtype == np.int64
    with pytest.raises(ValueError, match="boolean"):
        mask_to_indices(np.array([0, 1]))
