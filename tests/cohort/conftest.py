"""Shared by the cohort tests: a 400-subject tiny cohort and a lasso drawn from its own extent."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.rules import LassoStep
from lse_panel.testing import tiny_cohort

N = 400


@pytest.fixture(scope="module")
def source() -> Cohort:
    return tiny_cohort(N)


def triangle_lasso(cohort: Cohort) -> LassoStep:
    """A triangle around part of the fused UMAP, from the data's own extent."""
    xy = np.asarray(cohort.projection("fused/umap"), dtype=np.float64)
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    return LassoStep("fused/umap", [x0 - 1, x1 + 1, (x0 + x1) / 2], [y0 - 1, y0 - 1, y1 * 0.7 + y0 * 0.3])


@pytest.fixture
def draw_lasso() -> Callable[[Cohort], LassoStep]:
    """:func:`triangle_lasso`, for tests in any module of this folder."""
    return triangle_lasso
