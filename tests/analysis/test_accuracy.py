"""Accuracy per group for the panes: the selection, its comparison and the cohort, hidden groups masked."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.accuracy import accuracy_by_group, mask_hidden_groups, metrics_of_groups, selection_metrics
from lse_panel.analysis.groups import GroupSet
from lse_panel.analysis.metrics import PreparedMetrics, prepare_metrics
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort.bundle import Cohort
from lse_panel.testing import tiny_cohort

N = 400


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return tiny_cohort(N)


@pytest.fixture(scope="module")
def prepared(cohort: Cohort) -> PreparedMetrics:
    tasks = cohort.prediction_tasks()
    return prepare_metrics({name: cohort.phenotype(name) for name in tasks}, tasks, cohort.predictions)


def _values(table, group: str) -> np.ndarray:
    return table[table["group"] == group].sort_values(["phenotype", "latent", "metric"])["value"].to_numpy()


def test_selection_metrics_take_the_rest_as_a_mask_and_reuse_the_cohort(prepared: PreparedMetrics) -> None:
    selection = np.arange(0, N, 3)
    overall = metrics_of_groups(prepared, {"cohort": np.ones(N, dtype=bool)})
    table = selection_metrics(prepared, GroupSet(N, selection, "rest"), overall)
    assert set(table["group"]) == {"selection", "comparison", "cohort"}
    rest = np.setdiff1d(np.arange(N), selection)
    by_rows = metrics_of_groups(prepared, {"comparison": rest})
    np.testing.assert_allclose(_values(table, "comparison"), _values(by_rows, "comparison"), equal_nan=True)
    everyone = selection_metrics(prepared, GroupSet(N, selection, "all"), overall)
    np.testing.assert_array_equal(_values(everyone, "comparison"), _values(overall, "cohort"))


def test_hidden_groups_and_small_rows_are_masked(prepared: PreparedMetrics) -> None:
    policy = PrivacyPolicy(min_group_size=10)
    overall = metrics_of_groups(prepared, {"cohort": np.ones(N, dtype=bool)})
    groups = GroupSet(N, np.arange(N - 5), "rest", policy=policy)  # the rest is five: both hidden
    table = mask_hidden_groups(selection_metrics(prepared, groups, overall), groups.hidden, policy)
    shown = table[table["group"] == "cohort"]
    hidden = table[table["group"] != "cohort"]
    assert hidden["value"].isna().all() and shown["value"].notna().any()
    assert hidden["reason"].str.contains("5 subjects left out|fewer than 10 subjects").all()
    assert (hidden.loc[hidden["group"] == "selection", "n"] > 10).all()  # sizes stay visible


def test_accuracy_by_group_flags_rows_below_the_floor(prepared: PreparedMetrics) -> None:
    table = accuracy_by_group(prepared, {"few": np.arange(6), "many": np.arange(100, 300)},
                              policy=PrivacyPolicy(min_group_size=10))  # fmt: skip
    assert table.loc[table["group"] == "few", "hidden"].all() and table.loc[table["group"] == "few", "value"].isna().all()
    assert not table.loc[table["group"] == "many", "hidden"].any()
    assert accuracy_by_group(prepared, {}).empty
