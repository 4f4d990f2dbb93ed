"""Property-based: every lasso, degenerate or huge, selects exactly what plain ray casting selects, or is refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lse_panel.analysis.selection import MAX_VERTEX_COORDINATE, lasso_mask, ray_casting_mask_reference

EXAMPLES = settings.default.max_examples


def reference(x, y, px, py) -> np.ndarray:
    with np.errstate(all="ignore"):  # extreme coordinates overflow in both; the rule is the float64 arithmetic
        return ray_casting_mask_reference(x, y, px, py)


# Small integer grids make collinear edges, repeated vertices, zero-area polygons and points
# exactly on edges and vertices common rather than vanishingly rare.
GRID = st.integers(-4, 4).map(float)
ANY_FLOAT = st.floats(-MAX_VERTEX_COORDINATE, MAX_VERTEX_COORDINATE)  # subnormals included


@st.composite
def polygon_and_points(draw, coordinate=GRID, max_vertices: int = 12):
    n = draw(st.integers(0, max_vertices))
    px = np.array(draw(st.lists(coordinate, min_size=n, max_size=n)), dtype=np.float64)
    py = np.array(draw(st.lists(coordinate, min_size=n, max_size=n)), dtype=np.float64)
    k = draw(st.integers(1, 40))
    x = np.array(draw(st.lists(coordinate, min_size=k, max_size=k)), dtype=np.float64)
    y = np.array(draw(st.lists(coordinate, min_size=k, max_size=k)), dtype=np.float64)
    # Every vertex and edge midpoint is a point too: the boundary is where fast paths go wrong.
    if n:
        x = np.concatenate([x, px, px / 2 + np.roll(px, -1) / 2])
        y = np.concatenate([y, py, py / 2 + np.roll(py, -1) / 2])
    return px, py, x, y


@settings(max_examples=EXAMPLES)
@given(case=polygon_and_points(), dtype=st.sampled_from([np.float32, np.float64]))
def test_grid_polygons_match_ray_casting(case, dtype) -> None:
    px, py, x, y = case
    x, y = x.astype(dtype), y.astype(dtype)
    np.testing.assert_array_equal(lasso_mask(x, y, px, py), reference(x, y, px, py))


@settings(max_examples=EXAMPLES // 2)
@given(case=polygon_and_points(coordinate=ANY_FLOAT, max_vertices=8))
def test_any_finite_coordinates_match_ray_casting(case) -> None:
    """Subnormal, huge and mixed magnitudes: the grid must not break where cell sizes underflow or overflow."""
    px, py, x, y = case
    np.testing.assert_array_equal(lasso_mask(x, y, px, py), reference(x, y, px, py))


@settings(max_examples=EXAMPLES // 2)
@given(case=polygon_and_points(), scale=st.sampled_from([5e-324, 1e-320, 1e-310, 1e-300, 1e-12, 1e30, 2e99]),
       offset=st.sampled_from([0.0, 1.0, 1e6, -3e12]))
def test_tiny_and_far_lassos_match_ray_casting(case, scale: float, offset: float) -> None:
    """Subnormal cell sizes, a lasso a few ulps wide far from the origin, one near the range limit."""
    px, py, x, y = (a * scale + offset for a in case)
    np.testing.assert_array_equal(lasso_mask(x, y, px, py), reference(x, y, px, py))


@settings(max_examples=EXAMPLES // 4)
@given(big=st.floats(MAX_VERTEX_COORDINATE, 1.7e308, exclude_min=True), sign=st.sampled_from([1, -1]))
def test_vertices_beyond_the_arithmetic_range_are_refused(big: float, sign: int) -> None:
    """Past ±1e100 the crossing's float64 products overflow (on 941f057 a zero-area lasso selected points)."""
    with pytest.raises(ValueError, match="within ±1e"):
        lasso_mask(np.zeros(3), np.zeros(3), np.array([0.0, 0.0, 3.0]), np.array([0.0, 0.0, sign * big]))


@settings(max_examples=EXAMPLES // 4)
@given(case=polygon_and_points(), bad=st.sampled_from([np.nan, np.inf, -np.inf]), data=st.data())
def test_non_finite_vertex_is_refused(case, bad: float, data) -> None:
    px, py, x, y = case
    px, py = np.append(px, 0.0), np.append(py, 0.0)
    i = data.draw(st.integers(0, len(px) - 1))
    (px if data.draw(st.booleans()) else py)[i] = bad
    with pytest.raises(ValueError, match="NaN or infinite vertex"):
        lasso_mask(x, y, px, py)


@settings(max_examples=EXAMPLES // 4)
@given(points=hnp.arrays(np.float64, st.integers(1, 30), elements=GRID | st.just(np.nan)), case=polygon_and_points())
def test_nan_points_are_refused_or_left_out(points, case) -> None:
    px, py, _, _ = case
    x, y = points, points[::-1].copy()
    has_nan = bool(np.isnan(x).any() or np.isnan(y).any())
    if has_nan:
        with pytest.raises(ValueError, match="NaN coordinate"):
            lasso_mask(x, y, px, py)
    kept = ~(np.isnan(x) | np.isnan(y))
    mask = lasso_mask(x, y, px, py, on_nan="exclude")
    assert not mask[~kept].any()
    np.testing.assert_array_equal(mask[kept], reference(x[kept], y[kept], px, py))


@pytest.mark.parametrize("vertices", [[], [(0, 0)], [(0, 0), (1, 1)], [(0, 0), (1, 1), (2, 2)],
                                      [(0, 0), (0, 0), (0, 0)], [(0, 0), (2, 0), (1, 0), (0, 0)]])
def test_degenerate_lassos_select_nothing(vertices) -> None:
    """Fewer than three vertices, all on one line, or zero area: no area, nothing inside."""
    px = np.array([v[0] for v in vertices], dtype=float)
    py = np.array([v[1] for v in vertices], dtype=float)
    g = np.linspace(-1, 3, 41)
    x, y = (a.ravel() for a in np.meshgrid(g, g))
    mask = lasso_mask(x, y, px, py)
    assert not mask.any()
    np.testing.assert_array_equal(mask, reference(x, y, px, py))


@pytest.mark.parametrize("shape", ["star", "comb"])
def test_hundred_thousand_vertices(shape: str) -> None:
    """A 100k-vertex lasso (a shaky hand on a long drag) is exact; its speed is bench_selection.py's business."""
    n = 100_000
    rng = np.random.default_rng(7)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    if shape == "star":
        r = 1 + 0.5 * np.sin(200 * t) + 0.01 * rng.standard_normal(n)
        px, py = r * np.cos(t), r * np.sin(t)
    else:  # a comb: 25,000 teeth, each one 4 vertices, self-touching at the base
        teeth = np.arange(n // 4) / (n // 4)
        px = np.repeat(teeth, 4) + np.tile([0, 0, 0.5, 0.5], n // 4) / (n // 4)
        py = np.tile([0, 1, 1, 0], n // 4).astype(float)
    x = rng.uniform(px.min() - 0.1, px.max() + 0.1, 1_000)
    y = rng.uniform(py.min() - 0.1, py.max() + 0.1, 1_000)
    got = lasso_mask(x, y, px, py)
    np.testing.assert_array_equal(got, reference(x, y, px, py))
    assert 0 < got.sum() < len(x)
