"""One seeded row sampler: the rows a direction, a projection fit, a decode or a scatter is computed from."""

from __future__ import annotations

import numpy as np

__all__ = ["sample_rows"]


def sample_rows(rows: int | np.ndarray, sample: int | None, *, seed: int = 0) -> np.ndarray:
    """A fixed, seeded sample of at most ``sample`` row indices (sorted), or every row when there are fewer.

    Parameters
    ----------
    rows
        Either a row count ``n`` (sample from ``0 .. n - 1``) or the sorted row indices to sample from
        (a selection, say).
    sample
        Largest sample; ``None`` for every row.
    seed
        Seed of the generator, so the same cohort or selection always gives the same sample.

    Returns
    -------
    numpy.ndarray
        Sorted int64 row indices (a copy when every row is kept).

    Examples
    --------
    >>> sample_rows(5, 10).tolist()
    [0, 1, 2, 3, 4]
    >>> sample_rows(np.array([3, 8, 9]), None).tolist()
    [3, 8, 9]
    """
    indices = np.arange(rows, dtype=np.int64) if np.ndim(rows) == 0 else np.asarray(rows, dtype=np.int64).copy()
    if sample is None or indices.size <= sample:
        return indices
    pick = np.random.default_rng(seed).choice(indices.size, size=int(sample), replace=False)
    # Sorted: gathering a memory-mapped block in row order reads it sequentially.
    return np.sort(indices[pick])
