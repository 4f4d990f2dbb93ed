"""The differencing attacks of issue 14 on an aggregate-only explorer: each target's values stay hidden."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.components.explorer import Explorer
from lse_panel.testing import tiny_cohort

K = 10


@pytest.fixture(scope="module")
def cohort():
    return tiny_cohort(1_500)


@pytest.fixture
def explorer(cohort):
    explorer = Explorer(cohort, None, individual_level=False, min_group_size=K)
    explorer.state.comparison = "all"
    return explorer


def _means(explorer, rows) -> np.ndarray:
    """The comparison pane's means of the selection, one per continuous phenotype (NaN where hidden)."""
    explorer.select(indices=np.asarray(rows))
    table = explorer.compare()
    table = table[(table["group"] == "selection") & (table["type"] == "continuous")].set_index("phenotype")
    return table["mean_a"].astype(float)


def _truth(cohort, row: int, names) -> np.ndarray:
    return np.array([float(np.asarray(cohort.phenotype(name))[row]) for name in names])


def test_ten_then_ten_plus_target_reveals_nothing(explorer, cohort) -> None:
    base, target = np.arange(100, 110), 777
    mean_10 = _means(explorer, base)
    assert np.isfinite(mean_10).all()  # ten subjects: at the floor, shown
    mean_11 = _means(explorer, [*base, target])
    recovered = 11 * mean_11 - 10 * mean_10
    assert not np.isfinite(recovered.to_numpy()).any()
    assert "differs by fewer than 10 subjects" in explorer.compare_pane.message
    assert "selection" in explorer.state.groups.hidden
    assert not np.allclose(np.nan_to_num(recovered.to_numpy()), _truth(cohort, target, recovered.index), rtol=1e-4)


def test_union_of_two_shown_groups_plus_target(explorer, cohort) -> None:
    a, b, target = np.arange(0, 10), np.arange(50, 60), 900
    mean_a, mean_b = _means(explorer, a), _means(explorer, b)
    mean_union = _means(explorer, [*a, *b, target])
    recovered = 21 * mean_union - 10 * mean_a - 10 * mean_b
    assert not np.isfinite(recovered.to_numpy()).any()


def test_saved_subgroups_beside_the_selection(explorer, cohort) -> None:
    a, b, target = np.arange(200, 215), np.arange(300, 315), 1_234
    for name, rows in (("first", a), ("second", b)):
        explorer.select(indices=rows)
        explorer.save_subgroup(name)
    explorer.select(indices=[*a, *b, target])
    table = explorer.compare(["first", "second"])
    selection = table[(table["group"] == "selection") & (table["type"] == "continuous")]
    assert selection["mean_a"].isna().all()
