"""Exact, fast selection of 2-D points: box, lasso (even–odd, grid-accelerated), range filters, set algebra."""

from __future__ import annotations

import math
from typing import Literal, get_args

import numba
import numpy as np

SelectionMode = Literal["new", "add", "intersect", "subtract"]
MODES: tuple[str, ...] = get_args(SelectionMode)
"""How a new box, lasso or rule step combines with the selection so far: replace it, add to it,
intersect with it or subtract from it."""
NanPolicy = Literal["raise", "exclude"]

_CELLS_PER_VERTEX = 256.0
"""Grid cells per polygon vertex: ``16·sqrt(V)`` cells per side. Measured on 2M clustered points and a
500-vertex lasso: 4 cells/vertex → 15 % of boxed points in edge cells, 64 ms; 256 → 2 %, 33 ms (grid
build 0.8 ms); 1024 → 41 ms; 4096 → 62 ms (build 22 ms)."""

_MIN_CELLS = 1_024
_MAX_CELLS = 262_144
"""Bounds on the lasso grid: a triangle still gets a useful grid, a 50k-vertex lasso a bounded one."""

MAX_VERTEX_COORDINATE = 1e100
"""Largest vertex coordinate magnitude: the crossing's products stay finite up to ~1e154, and no
projection (float32, at most 3.4e38) comes near; past it a zero-area lasso could select points."""

_MIN_CELL = 1e-280
"""Smallest grid cell: ``_PAD`` times it must stay a normal float64 (above 2.2e-308)."""

_PAD = 1e-6
"""Edge cells are marked with this fraction of a cell as slack (plus a few ulps of the coordinates), far
above float64 rounding, so a point never takes a non-edge cell's answer while within rounding
distance of an edge."""


# ----------------------------------------------------------------------------- input checks


def _coords(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both coordinate arrays as 1-D float ndarrays (memory-maps stay views), same length."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"x and y must be 1-D arrays; got shapes {x.shape} and {y.shape}.")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y have different lengths ({x.shape[0]} and {y.shape[0]}); pass one coordinate per point.")
    # Integers and float16 become float64; float32 and float64 pass through uncopied.
    if x.dtype.kind != "f" or x.dtype.itemsize < 4:
        x = x.astype(np.float64)
    if y.dtype.kind != "f" or y.dtype.itemsize < 4:
        y = y.astype(np.float64)
    return x, y


def _raise_on_nan(n_nan: int, policy: NanPolicy, n: int) -> None:
    if n_nan and policy == "raise":
        raise ValueError(
            f"{n_nan} of {n} points have a NaN coordinate; drop them from the projection, "
            "or pass on_nan='exclude' to leave them unselected."
        )
    if policy not in ("raise", "exclude"):
        raise ValueError(f"on_nan must be 'raise' or 'exclude'; got {policy!r}.")


def _polygon(polygon_xs: np.ndarray, polygon_ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    px = np.ascontiguousarray(polygon_xs, dtype=np.float64).ravel()
    py = np.ascontiguousarray(polygon_ys, dtype=np.float64).ravel()
    if px.shape != py.shape:
        raise ValueError(
            f"polygon_xs and polygon_ys have different lengths ({px.size} and {py.size}); pass one x and one y per vertex."
        )
    if not (np.isfinite(px).all() and np.isfinite(py).all()):
        raise ValueError("the polygon has a NaN or infinite vertex coordinate; pass finite vertices only.")
    if px.size and max(np.abs(px).max(), np.abs(py).max()) > MAX_VERTEX_COORDINATE:
        raise ValueError(f"polygon vertices must lie within ±{MAX_VERTEX_COORDINATE:.0e}; got one at "
                         f"{max(np.abs(px).max(), np.abs(py).max()):.3g}. Draw the lasso on the projection's scale.")
    return px, py


# ----------------------------------------------------------------------------- box and range


@numba.njit(nogil=True, cache=True)
def _box_kernel(x, y, x0, y0, x1, y1, out):  # pragma: no cover - compiled
    n_nan = 0
    for i in range(x.shape[0]):
        xv = x[i]
        yv = y[i]
        out[i] = xv >= x0 and xv <= x1 and yv >= y0 and yv <= y1
        if xv != xv or yv != yv:
            n_nan += 1
    return n_nan


def box_mask(
    x: np.ndarray, y: np.ndarray, bounds: tuple[float, float, float, float], *, on_nan: NanPolicy = "raise"
) -> np.ndarray:
    """Points inside an axis-aligned box, edges included.

    Parameters
    ----------
    x, y
        Point coordinates, 1-D, same length; float32 or float64, may be memory-mapped.
    bounds
        ``(x0, y0, x1, y1)`` as Bokeh's ``BoundsXY`` stream gives them; any two opposite corners,
        in any order.
    on_nan
        ``"raise"`` (default) raises ``ValueError`` when a point has a NaN coordinate;
        ``"exclude"`` leaves such points unselected.

    Returns
    -------
    numpy.ndarray
        Boolean mask, one entry per point.
    """
    x, y = _coords(x, y)
    bx0, by0, bx1, by1 = (float(b) for b in bounds)
    if not all(math.isfinite(b) for b in (bx0, by0, bx1, by1)):
        raise ValueError(f"box bounds must be finite numbers; got {tuple(bounds)!r}.")
    bx0, bx1 = min(bx0, bx1), max(bx0, bx1)
    by0, by1 = min(by0, by1), max(by0, by1)
    out = np.empty(x.shape[0], dtype=np.bool_)
    # Compare in float64: a float32 point on the box edge stays on it.
    n_nan = _box_kernel(x, y, bx0, by0, bx1, by1, out)
    _raise_on_nan(n_nan, on_nan, x.shape[0])
    return out


def range_mask(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Values within ``[lo, hi]`` (inclusive; ``None`` leaves that side open); NaN is never inside.

    Parameters
    ----------
    values
        One phenotype column.
    lo, hi
        Bounds; swapped if given in the wrong order.

    Returns
    -------
    numpy.ndarray
        Boolean mask, one entry per value.
    """
    values = np.asarray(values)
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    # Comparisons with NaN are False, so missing values drop out without a separate isnan pass.
    if lo is None and hi is None:
        return ~np.isnan(values) if values.dtype.kind == "f" else np.ones(values.shape[0], dtype=bool)
    if lo is None:
        return values <= hi
    if hi is None:
        return values >= lo
    return (values >= lo) & (values <= hi)


# ----------------------------------------------------------------------------- lasso: reference


def ray_casting_mask_reference(x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Even–odd point-in-polygon by plain ray casting, O(points × vertices); the tests' yardstick.

    This *defines* the rule the fast path follows, including points exactly on an edge or vertex:
    a point ``(x, y)`` is inside when a ray from it towards +x crosses an odd number of edges, where
    edge ``(a, b)`` (the polygon closes itself, from the last vertex back to the first) is crossed
    when exactly one endpoint lies strictly above the point (``(y_a > y) != (y_b > y)``) and the
    crossing abscissa, computed in float64 as ``x_a + (y − y_a)·(x_b − x_a)/(y_b − y_a)`` and clamped
    to the edge's own x-range (rounding must not move it past an endpoint), is strictly
    greater than ``x``. For an axis-aligned rectangle this puts points on the left and bottom edges
    inside and on the right and top edges outside, so tiles that share an edge never both select a
    point. Polygons with fewer than three vertices select nothing.

    Parameters
    ----------
    x, y
        Point coordinates, 1-D, same length.
    px, py
        Polygon vertices, in order, open or closed.

    Returns
    -------
    numpy.ndarray
        Boolean mask, one entry per point.
    """
    x, y = _coords(x, y)
    px, py = _polygon(px, py)
    inside = np.zeros(x.shape[0], dtype=bool)
    if px.size < 3:
        return inside
    xs = x.astype(np.float64)
    ys = y.astype(np.float64)
    for i in range(px.size):
        j = i + 1 if i + 1 < px.size else 0
        xi, yi, xj, yj = px[i], py[i], px[j], py[j]
        if yi == yj:
            continue  # a horizontal edge is never crossed under the half-open rule
        straddles = (yi > ys) != (yj > ys)
        crossing = np.clip(xi + (ys - yi) * (xj - xi) / (yj - yi), min(xi, xj), max(xi, xj))
        inside ^= straddles & (xs < crossing)
    return inside


# ----------------------------------------------------------------------------- lasso: grid-accelerated


def _grid_shape(n_vertices: int, width: float, height: float) -> tuple[int, int]:
    """Cells per side: about ``256·V`` roughly square cells (bounded), so few points land in edge cells."""
    n_cells = int(min(max(_CELLS_PER_VERTEX * n_vertices, _MIN_CELLS), _MAX_CELLS))
    if width <= 0 or height <= 0:
        return (1 if width <= 0 else n_cells), (1 if height <= 0 else n_cells)
    gx = max(1, int(round(math.sqrt(n_cells * width / height))))
    gy = max(1, int(round(n_cells / gx)))
    return min(gx, 4096), min(gy, 4096)


@numba.njit(nogil=True, cache=True)
def _cell_index(v, origin, inv, g):  # pragma: no cover - compiled
    c = int(math.floor((v - origin) * inv))
    if c < 0:
        return 0
    if c >= g:
        return g - 1
    return c


@numba.njit(nogil=True, cache=True)
def _build_grid(px, py, bx0, by0, gx, gy, cw, ch, slack):  # pragma: no cover - compiled
    """Edge cells, per-row edge buckets and every non-edge cell's inside/outside answer.

    Returns ``(state, row_start, rx0, ry0, rx1, ry1)``: ``state[r*gx + c]`` is 0 (outside),
    1 (inside) or 2 (crossed by an edge); row ``r``'s bucket holds, contiguously, every edge whose
    y-range reaches the row's band (plus slack), copied so the point loop reads memory in order.
    """
    nv = px.shape[0]
    inv_cw = 1.0 / cw
    inv_ch = 1.0 / ch
    padx = _PAD * cw + slack
    pady = _PAD * ch + slack
    state = np.zeros(gx * gy, dtype=np.uint8)
    counts = np.zeros(gy + 1, dtype=np.int64)
    # Pass 1: which rows each edge reaches; mark the cells it crosses within each row.
    for e in range(nv):
        f = e + 1 if e + 1 < nv else 0
        x0 = px[e]
        y0 = py[e]
        x1 = px[f]
        y1 = py[f]
        r0 = _cell_index(min(y0, y1) - pady, by0, inv_ch, gy)
        r1 = _cell_index(max(y0, y1) + pady, by0, inv_ch, gy)
        for r in range(r0, r1 + 1):
            counts[r + 1] += 1
            if y0 == y1:
                xa = min(x0, x1)
                xb = max(x0, x1)
            else:
                # The part of the segment inside this row's band (with slack), as an x-interval.
                band_lo = by0 + r * ch - pady
                band_hi = by0 + (r + 1) * ch + pady
                ta = (band_lo - y0) / (y1 - y0)
                tb = (band_hi - y0) / (y1 - y0)
                if ta > tb:
                    ta, tb = tb, ta
                ta = max(ta, 0.0)
                tb = min(tb, 1.0)
                xa = x0 + ta * (x1 - x0)
                xb = x0 + tb * (x1 - x0)
                if xa > xb:
                    xa, xb = xb, xa
            c0 = _cell_index(xa - padx, bx0, inv_cw, gx)
            c1 = _cell_index(xb + padx, bx0, inv_cw, gx)
            for c in range(c0, c1 + 1):
                state[r * gx + c] = 2
    row_start = np.cumsum(counts)
    total = row_start[gy]
    rx0 = np.empty(total, dtype=np.float64)
    ry0 = np.empty(total, dtype=np.float64)
    rx1 = np.empty(total, dtype=np.float64)
    ry1 = np.empty(total, dtype=np.float64)
    fill = row_start[:gy].copy()
    # Pass 2: fill the row buckets (same row range as pass 1, so the counts match).
    for e in range(nv):
        f = e + 1 if e + 1 < nv else 0
        r0 = _cell_index(min(py[e], py[f]) - pady, by0, inv_ch, gy)
        r1 = _cell_index(max(py[e], py[f]) + pady, by0, inv_ch, gy)
        for r in range(r0, r1 + 1):
            k = fill[r]
            rx0[k] = px[e]
            ry0[k] = py[e]
            rx1[k] = px[f]
            ry1[k] = py[f]
            fill[r] = k + 1
    # Pass 3: one ray cast from the centre of each non-edge cell; no edge comes near the cell, so every
    # point in it shares the centre's parity.
    for r in range(gy):
        yc = by0 + (r + 0.5) * ch
        for c in range(gx):
            if state[r * gx + c] == 2:
                continue
            xc = bx0 + (c + 0.5) * cw
            if _row_parity(xc, yc, row_start[r], row_start[r + 1], rx0, ry0, rx1, ry1):
                state[r * gx + c] = 1
    return state, row_start, rx0, ry0, rx1, ry1


@numba.njit(nogil=True, cache=True, inline="always")
def _row_parity(xv, yv, start, stop, rx0, ry0, rx1, ry1):  # pragma: no cover - compiled
    # Bit-for-bit the reference's arithmetic (same operations, same order, float64, no fastmath), so
    # points on edges and vertices get the reference's answer. Edges left out of the bucket have a
    # y-range that misses yv, so the reference's straddle test is False for them anyway.
    inside = False
    for k in range(start, stop):
        yi = ry0[k]
        yj = ry1[k]
        if (yi > yv) != (yj > yv):
            xa = rx0[k]
            xb = rx1[k]
            crossing = xa + (yv - yi) * (xb - xa) / (yj - yi)
            lo = min(xa, xb)
            hi = max(xa, xb)
            if crossing < lo:
                crossing = lo
            elif crossing > hi:
                crossing = hi
            if xv < crossing:
                inside = not inside
    return inside


@numba.njit(nogil=True, cache=True)
def _lasso_kernel(
    x, y, out, bx0, by0, bx1, by1, gx, gy, inv_cw, inv_ch, state, row_start, rx0, ry0, rx1, ry1
):  # pragma: no cover - compiled
    n_nan = 0
    for i in range(x.shape[0]):
        xv = np.float64(x[i])
        yv = np.float64(y[i])
        # Inclusive bounding box: a point on the polygon's left or bottom edge can be inside.
        if not (xv >= bx0 and xv <= bx1 and yv >= by0 and yv <= by1):
            out[i] = False
            if xv != xv or yv != yv:
                n_nan += 1
            continue
        c = int((xv - bx0) * inv_cw)
        if c >= gx:
            c = gx - 1
        r = int((yv - by0) * inv_ch)
        if r >= gy:
            r = gy - 1
        s = state[r * gx + c]
        if s == 2:
            out[i] = _row_parity(xv, yv, row_start[r], row_start[r + 1], rx0, ry0, rx1, ry1)
        else:
            out[i] = s == 1
    return n_nan


def lasso_mask(
    x: np.ndarray,
    y: np.ndarray,
    polygon_xs: np.ndarray,
    polygon_ys: np.ndarray,
    *,
    on_nan: NanPolicy = "raise",
) -> np.ndarray:
    """Points inside a lasso polygon under the even–odd rule, exactly, in O(points + vertices).

    The rule, including points exactly on an edge or a vertex, is the one
    :func:`ray_casting_mask_reference` spells out (half-open ray crossing in float64); this function
    returns the same mask, bit for bit. Concave and self-intersecting polygons (figure-eights,
    bow-ties: the overlap of two loops is outside), duplicate vertices and an explicit closing vertex
    are all fine. Fewer than three vertices select nothing, without error: a click or a tiny drag
    with the lasso tool encloses no area.

    Hand-written because the libraries are too slow for an interactive lasso: matplotlib's
    ``Path.contains_points`` takes 2–10 s for 10M points and a 1000-vertex lasso (DESIGN.md), this
    grid about 0.2 s; ``tests/benchmarks/bench_selection.py`` measures both in the same run.

    How: a grid of about ``256·V`` cells (at most 262,144) covers the polygon's bounding box. Cells an edge passes through
    (with slack) are edge cells; every other cell is wholly inside or outside, decided once by a ray
    from its centre. A point outside the bounding box is out at once, a point in a non-edge cell
    takes its cell's answer, and only a point in an edge cell is ray-cast exactly, against just the
    edges whose y-range reaches its grid row. The point loop is a single-threaded numba kernel with
    the GIL released (numba's workqueue threading layer aborts under concurrent calls, DESIGN.md),
    so several sessions can lasso at once.

    Parameters
    ----------
    x, y
        Point coordinates, 1-D, same length; float32 or float64, may be memory-mapped or strided
        (columns of an ``(n, 2)`` projection).
    polygon_xs, polygon_ys
        Vertices in order, as Bokeh's ``Lasso`` stream gives them; open or closed.
    on_nan
        ``"raise"`` (default) raises ``ValueError`` when a point has a NaN coordinate;
        ``"exclude"`` leaves such points unselected.

    Returns
    -------
    numpy.ndarray
        Boolean mask, one entry per point.
    """
    x, y = _coords(x, y)
    px, py = _polygon(polygon_xs, polygon_ys)
    n = x.shape[0]
    if px.size < 3:
        if on_nan == "raise" and n and (np.isnan(x).any() or np.isnan(y).any()):
            _raise_on_nan(int((np.isnan(x) | np.isnan(y)).sum()), on_nan, n)
        return np.zeros(n, dtype=bool)
    bx0, bx1 = float(px.min()), float(px.max())
    by0, by1 = float(py.min()), float(py.max())
    gx, gy = _grid_shape(px.size, bx1 - bx0, by1 - by0)
    # A zero-width (or -height) polygon gets one cell along that axis; any positive size will do.
    cw = (bx1 - bx0) / gx if bx1 > bx0 else 1.0
    ch = (by1 - by0) / gy if by1 > by0 else 1.0
    if min(cw, ch) < _MIN_CELL:
        # A lasso under ~1e-280 wide: the cells' slack would lose its precision (or the cells underflow:
        # 941f057 raised ZeroDivisionError). One cell, crossed by every edge, so each point in the
        # bounding box is tested exactly.
        gx, gy, cw, ch = 1, 1, 1.0, 1.0
    # Absolute slack too: a tiny lasso far from the origin has cells not much wider than an ulp.
    slack = 64 * np.finfo(np.float64).eps * max(abs(bx0), abs(bx1), abs(by0), abs(by1))
    state, row_start, rx0, ry0, rx1, ry1 = _build_grid(px, py, bx0, by0, gx, gy, cw, ch, slack)
    out = np.empty(n, dtype=np.bool_)
    n_nan = _lasso_kernel(
        x, y, out, bx0, by0, bx1, by1, gx, gy, 1.0 / cw, 1.0 / ch, state, row_start, rx0, ry0, rx1, ry1
    )
    _raise_on_nan(n_nan, on_nan, n)
    return out


# ----------------------------------------------------------------------------- index sets


def mask_to_indices(mask: np.ndarray) -> np.ndarray:
    """Sorted int64 indices of the True entries of a boolean mask."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be boolean; got dtype {mask.dtype}. Use combine() for index arrays.")
    return np.flatnonzero(mask).astype(np.int64, copy=False)


def group_rows(group: np.ndarray, n: int, what: str = "group") -> np.ndarray:
    """A group given as row indices or a boolean mask over ``n`` subjects, as int64 rows (validated, order kept).

    Parameters
    ----------
    group
        1-D integer indices in ``0..n-1`` (repeats allowed) or a boolean mask of length ``n``.
    n
        Subjects in the table the group indexes.
    what
        How error messages name the group, e.g. ``"group 'selection'"``.
    """
    g = np.asarray(group)
    if g.dtype == np.bool_:
        if g.shape != (n,):
            raise ValueError(f"{what} is a boolean mask of shape {g.shape}; the table has {n} rows.")
        return np.flatnonzero(g)
    if g.ndim != 1 or (g.size and g.dtype.kind not in "iu"):
        raise ValueError(f"{what} must be 1-D integer indices or a boolean mask; got {g.dtype} {g.shape}.")
    if g.size and (g.min() < 0 or g.max() >= n):
        raise ValueError(f"{what} has indices outside 0..{n - 1}.")
    return g.astype(np.int64, copy=False)


def sorted_unique(indices: np.ndarray, what: str = "indices") -> np.ndarray:
    """Sorted unique int64 indices, validated; O(n) when already sorted (the usual case)."""
    a = np.asarray(indices)
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of indices; got shape {a.shape}.")
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integer indices; got dtype {a.dtype}. Use mask_to_indices() for masks.")
    a = a.astype(np.int64, copy=False)
    # Selections arrive sorted (mask_to_indices); check in O(n) and sort only when they are not.
    # Sort + dedupe, not np.unique: numpy 2.4's hash-based unique takes ~0.4 s on 500k int64.
    if a.size > 1 and not bool(np.all(a[1:] > a[:-1])):
        a = np.sort(a)
        a = a[np.r_[True, a[1:] != a[:-1]]]
    return a


def combine(current: np.ndarray, new: np.ndarray, mode: SelectionMode = "new") -> np.ndarray:
    """Combine the current selection with a new one, as a lasso with a modifier key would.

    Parameters
    ----------
    current
        Current selection, int indices (sorted unique is fastest; anything else is sorted first).
    new
        The new selection, int indices.
    mode
        ``"new"`` replaces, ``"add"`` takes the union, ``"intersect"`` the intersection,
        ``"subtract"`` removes ``new`` from ``current``.

    Returns
    -------
    numpy.ndarray
        Sorted, unique int64 indices.
    """
    new = sorted_unique(new, "new")
    if mode == "new":
        return new
    current = sorted_unique(current, "current")
    if mode == "add":
        # Two sorted runs: the stable sort (timsort) merges them in linear time.
        both = np.sort(np.concatenate([current, new]), kind="stable")
        if both.size < 2:
            return both
        keep = np.empty(both.size, dtype=bool)
        keep[0] = True
        np.not_equal(both[1:], both[:-1], out=keep[1:])
        return both[keep]
    if mode in ("intersect", "subtract"):
        if new.size == 0 or current.size == 0:
            return current[:0] if mode == "intersect" else current
        pos = np.searchsorted(new, current)
        pos[pos == new.size] = new.size - 1
        found = new[pos] == current
        return current[found] if mode == "intersect" else current[~found]
    raise ValueError(f"mode must be one of 'new', 'add', 'intersect', 'subtract'; got {mode!r}.")
