"""Numba kernels over a group given as a mask: the same sums as picking the rows first."""

from __future__ import annotations

import numpy as np

from lse_panel.analysis.mask_kernels import sum_selected_rows


def test_summing_a_groups_rows_in_place_equals_summing_the_picked_rows() -> None:
    rng = np.random.default_rng(4)
    block = rng.normal(size=(3_001, 16)).astype(np.float32)
    for share in (0.0, 0.3, 1.0):
        mask = rng.random(3_001) < share
        np.testing.assert_allclose(sum_selected_rows(block, mask), block[mask].sum(axis=0, dtype=np.float64), rtol=1e-12, atol=1e-9)
