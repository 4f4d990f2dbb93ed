"""Phenotype filters obey the privacy floor: no histogram of fewer subjects than min_group_size."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort.bundle import Cohort
from lse_panel.components.filters import PhenotypeFilters
from lse_panel.components.state import ExplorerState
from lse_panel.testing import tiny_cohort

N = 200


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return tiny_cohort(N)


def test_selection_histograms_hidden_below_the_floor(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    filters = PhenotypeFilters(state)
    assert filters.hidden == "" and not filters._note.visible
    state.select(np.arange(5))
    assert "fewer than 10 subjects (5)" in filters.hidden and filters._note.visible
    for pipe in filters._pipes.values():
        assert pipe.data.sum() == 0
    state.select(np.arange(50))
    assert filters.hidden == ""
    assert filters._pipes["sex"].data.sum() == 50
    # Everyone but five: the cohort's histogram minus the selection's would show those five.
    state.select(np.arange(N - 5))
    assert "5 subjects left out" in filters.hidden
    assert all(pipe.data.sum() == 0 for pipe in filters._pipes.values())


@pytest.mark.parametrize("floor", [0, 1])
def test_a_floor_of_zero_or_one_turns_it_off(cohort: Cohort, floor: int) -> None:
    state = ExplorerState(cohort, policy=PrivacyPolicy(min_group_size=floor))
    filters = PhenotypeFilters(state)
    state.select(np.arange(5))
    assert filters.hidden == ""
    assert filters._pipes["sex"].data.sum() == 5
