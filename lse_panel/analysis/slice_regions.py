"""Areas of a 2-D map where a per-subject loss runs high, outlined as polygons a lasso can re-apply."""

from __future__ import annotations

import numpy as np
from contourpy import contour_generator
from scipy import ndimage

__all__ = ["high_loss_regions"]

_BOUNDS_SAMPLE = 50_000
"""Subjects the map's extent is estimated from: quantiles of a sample are as good and ~10× cheaper at 500k."""


def _extent(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """The 0.1–99.9 % range of one coordinate, so a few far outliers do not squash the grid."""
    sample = values if values.size <= _BOUNDS_SAMPLE else values[rng.integers(0, values.size, _BOUNDS_SAMPLE)]
    lo, hi = np.quantile(np.asarray(sample, dtype=np.float64), [0.001, 0.999])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _outline(component: np.ndarray, x0: float, y0: float, width: float, height: float) -> np.ndarray:
    """The outer boundary of a set of grid cells, as the vertices of one closed polygon.

    The 0.5 contour of the 0/1 cell grid (zero-padded so every ring closes) runs along the cell
    edges, cutting corners diagonally; of the rings it returns, the one enclosing the largest
    area is the outer boundary (holes were filled before).
    """
    padded = np.pad(component.astype(np.float64), 1)
    gx, gy = padded.shape
    centres_x = x0 + (np.arange(gx) - 0.5) * width
    centres_y = y0 + (np.arange(gy) - 0.5) * height
    lines = contour_generator(x=centres_x, y=centres_y, z=padded.T).lines(0.5)
    return max(lines, key=_ring_area)


def high_loss_regions(
    x: np.ndarray,
    y: np.ndarray,
    include: np.ndarray,
    excess: np.ndarray,
    *,
    grid: int = 48,
    z: float = 3.0,
    min_count: int = 20,
    max_regions: int = 10,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Polygons around the areas of a map where the loss is significantly above the cohort's mean.

    How: the map's extent (0.1–99.9 % of each axis) is cut into ``grid × grid`` cells; each cell
    gets the count, sum and sum of squares of the subjects' excess loss (one ``np.bincount`` per
    sum), summed over the cell and its eight neighbours so a region is not shredded by noise. A
    cell is flagged when that neighbourhood's mean excess is more than ``z`` standard errors above
    zero; edge-adjacent flagged cells merge into regions. Of each region, the cells whose own mean
    excess is at least half the region's are kept (the neighbourhood sums blur it by a cell), holes
    are filled, and each connected piece's outline becomes a polygon. Pieces are returned by their
    total excess loss, largest first.

    These regions are chosen by looking at the loss, so a test of them on the same subjects is
    biased: pass an ``include`` mask that keeps only a random half (the caller tests on the other half).

    Parameters
    ----------
    x, y
        The map's coordinates, one per subject.
    include
        Boolean mask: the subjects the search may look at (not those with a missing loss, nor the
        held-out half).
    excess
        Each subject's loss minus the cohort's mean loss (any value, even NaN, where ``include`` is False).
    grid
        Cells per axis.
    z
        How many standard errors above zero a neighbourhood's mean excess must be.
    min_count
        Fewest subjects a flagged neighbourhood holds.
    max_regions
        Most regions returned.
    seed
        Seed for the sample the extent is estimated from.

    Returns
    -------
    list of (xs, ys)
        Each region's polygon vertices (closed: the last vertex repeats the first), in map units.
    """
    if grid < 2:
        raise ValueError(f"grid must be at least 2 cells per axis; got {grid}.")
    rng = np.random.default_rng(seed)
    (x0, x1), (y0, y1) = _extent(x, rng), _extent(y, rng)
    width, height = (x1 - x0) / grid, (y1 - y0) / grid
    ix = np.clip(np.floor((np.asarray(x, dtype=np.float64) - x0) / width), 0, grid - 1).astype(np.int64)
    iy = np.clip(np.floor((np.asarray(y, dtype=np.float64) - y0) / height), 0, grid - 1).astype(np.int64)
    cell = ix * grid + iy
    include = np.asarray(include, dtype=bool)
    e = np.where(include, np.asarray(excess, dtype=np.float64), 0.0)
    sums = np.stack(
        [np.bincount(cell, weights=v, minlength=grid * grid).reshape(grid, grid) for v in (include.astype(np.float64), e, e * e)]
    )
    local = ndimage.uniform_filter(sums, size=(1, 3, 3), mode="constant") * 9.0
    n, s, q = local
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s / n
        var = (q - s * mean) / (n - 1.0)
        score = mean / np.sqrt(var / n)
    flagged = (n >= min_count) & (var > 0) & (score > z)
    labels, n_labels = ndimage.label(flagged)
    # The neighbourhood sums blur a region by a cell all round; keep, of each region found, the
    # cells whose own mean excess is at least half the region's ("full width at half maximum").
    cell_n, cell_sum = sums[0], sums[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        cell_mean = cell_sum / cell_n
    core = np.zeros_like(flagged)
    for label in range(1, n_labels + 1):
        region = labels == label
        half = 0.5 * cell_sum[region].sum() / max(cell_n[region].sum(), 1.0)
        core |= region & (cell_n > 0) & (cell_mean >= half)
    pieces, n_pieces = ndimage.label(ndimage.binary_fill_holes(core))
    if n_pieces == 0:
        return []
    excess_by_piece = ndimage.sum_labels(cell_sum, pieces, index=np.arange(1, n_pieces + 1))
    regions = []
    for piece in np.argsort(-excess_by_piece)[:max_regions] + 1:
        if excess_by_piece[piece - 1] <= 0:
            break
        ring = _outline(pieces == piece, x0, y0, width, height)
        regions.append((ring[:, 0].copy(), ring[:, 1].copy()))
    return regions
