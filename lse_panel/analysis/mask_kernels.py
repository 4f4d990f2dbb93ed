"""Numba kernels that count or sum a group's rows in one pass over a partition, the group given as a mask."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=False)
def count_selected_codes(codes: np.ndarray, mask: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Add 1 to ``out[offsets[j] + codes[i, j]]`` for every selected row ``i`` and column ``j`` whose code is not negative."""
    n, p = codes.shape
    for i in range(n):
        if mask[i]:
            for j in range(p):
                c = codes[i, j]
                if c >= 0:
                    out[offsets[j] + c] += 1


@numba.njit(nogil=True, cache=False)
def sum_selected_rows(block: np.ndarray, mask: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """float64 column sums of the rows of ``block`` where ``mask`` is true, without copying them out."""
    n, d = block.shape
    out = np.zeros(d, dtype=np.float64)
    for i in range(n):
        if mask[i]:
            for j in range(d):
                out[j] += block[i, j]
    return out
