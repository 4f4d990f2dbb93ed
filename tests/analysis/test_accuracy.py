"""Accuracy per group for the panes: the selection, its comparison and the cohort, hidden groups masked."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from lse_panel.analysis.accuracy import accuracy_by_group, mask_hidden_groups, selection_metrics
from lse_panel.analysis.groups import GroupSet, PreparedSums
from lse_panel.analysis.metric_statistics import PreparedMetrics, group_sufficient_statistics, prepare_metrics
from lse_panel.analysis.metrics import subgroup_metrics
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


def _sums(prepared: PreparedMetrics) -> PreparedSums:
    total = group_sufficient_statistics(prepared, {"all": np.arange(prepared.n)})["all"]
    return PreparedSums(prepared, lambda: total)


def _values(table, group: str) -> np.ndarray:
    return table[table["group"] == group].sort_values(["phenotype", "latent", "metric"])["value"].to_numpy()


def test_selection_metrics_take_the_rest_by_subtraction_and_the_cohort_from_its_total(prepared) -> None:
    selection = np.arange(0, N, 3)
    sums = _sums(prepared)
    table = selection_metrics(GroupSet(N, selection, "rest", metric_sums=sums))
    assert set(table["group"]) == {"selection", "comparison", "cohort"}
    rest = np.setdiff1d(np.arange(N), selection)
    direct = subgroup_metrics(None, None, None, {"selection": selection, "comparison": rest, "cohort": np.arange(N)},
                              prepared=prepared)  # fmt: skip
    pd.testing.assert_frame_equal(table, direct, rtol=1e-9)
    everyone = selection_metrics(GroupSet(N, selection, "all", metric_sums=sums))
    np.testing.assert_array_equal(_values(everyone, "comparison"), _values(everyone, "cohort"))


def test_groups_with_saved_subgroups_share_the_selection_statistics(prepared) -> None:
    sums = _sums(prepared)
    calls = []
    counting = PreparedSums(prepared, sums.total)
    counting_rows = counting.rows_statistics
    object.__setattr__(counting, "rows_statistics", lambda rows: calls.append(len(rows)) or counting_rows(rows))
    groups = GroupSet(N, np.arange(50), "rest", metric_sums=counting)
    groups.metric_statistics("selection")
    wider = groups.including({"older": np.arange(100, 200)})
    wider.metric_statistics("selection")
    wider.metric_statistics("comparison")
    wider.metric_statistics("older")
    groups.metric_statistics("comparison")
    assert calls == [50, 100]  # the selection once, the subgroup once; the rest by subtraction


def test_hidden_groups_and_small_rows_are_masked(prepared: PreparedMetrics) -> None:
    policy = PrivacyPolicy(min_group_size=10)
    groups = GroupSet(N, np.arange(N - 5), "rest", policy=policy, metric_sums=_sums(prepared))  # the rest is five
    table = mask_hidden_groups(selection_metrics(groups), groups.hidden, policy)
    shown = table[table["group"] == "cohort"]
    hidden = table[table["group"] != "cohort"]
    assert hidden["value"].isna().all() and hidden["ci_low"].isna().all() and shown["value"].notna().any()
    assert hidden["reason"].str.contains("5 subjects left out|fewer than 10 subjects").all()
    assert (hidden.loc[hidden["group"] == "selection", "n"] > 10).all()  # sizes stay visible


def test_accuracy_by_group_flags_rows_below_the_floor(prepared: PreparedMetrics) -> None:
    groups = GroupSet(N, np.arange(6), "rest", extra={"many": np.arange(100, 300)}, metric_sums=_sums(prepared))
    table = accuracy_by_group(groups, {"selection": "few", "many": "many"}, policy=PrivacyPolicy(min_group_size=10))
    assert table.loc[table["group"] == "few", "hidden"].all() and table.loc[table["group"] == "few", "value"].isna().all()
    assert not table.loc[table["group"] == "many", "hidden"].any()
    assert accuracy_by_group(groups, {}).empty
    assert accuracy_by_group(GroupSet(N, np.arange(6)), {"selection": "few"}).empty  # no predictions
