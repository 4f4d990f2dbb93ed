"""Numba kernel that counts many phenotypes' bin codes of a group's rows in one pass over the rows."""

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
