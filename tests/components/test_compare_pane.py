"""The comparison pane: its numbers are compare_groups' and subgroup_metrics', and small groups never show."""

from __future__ import annotations


import numpy as np
import pandas as pd
import panel as pn
import pytest
from bokeh.models import Plot

from lse_panel.analysis.compare import COLUMNS, compare_groups
from lse_panel.analysis.metrics import subgroup_metrics
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort.bundle import Cohort
from lse_panel.components.compare import ComparePane
from lse_panel.components.state import ExplorerState
from lse_panel.components.subgroups import SubgroupManager
from lse_panel.testing import tiny_cohort

N = 600
NUMBERS = ["mean_a", "mean_b", "sd_a", "sd_b", "difference", "effect", "statistic", "p_value", "q_value"]



@pytest.fixture
def cohort() -> Cohort:
    return tiny_cohort(N)  # fresh per test: its in-memory subgroup store starts empty


def _expected(cohort: Cohort, a: np.ndarray, b: np.ndarray | None) -> pd.DataFrame:
    table = {name: cohort.phenotype(name) for name in cohort.phenotype_specs}
    return compare_groups(table, cohort.phenotype_specs, a, b)


def _rows(table: pd.DataFrame, group: str) -> pd.DataFrame:
    return table[table["group"] == group][COLUMNS].reset_index(drop=True)


def test_empty_shows_a_message(cohort: Cohort) -> None:
    pane = ComparePane(ExplorerState(cohort))
    assert pane.table is None and "No subjects selected" in pane.message
    pn.panel(pane).get_root()


@pytest.mark.parametrize("comparison", ["rest", "all"])
def test_values_equal_compare_groups(cohort: Cohort, comparison: str) -> None:
    state = ExplorerState(cohort, comparison=comparison)
    pane = ComparePane(state)
    state.select(np.arange(0, N, 3))
    expected = _expected(cohort, state.selection, None if comparison == "rest" else np.arange(N))
    pd.testing.assert_frame_equal(_rows(pane.table, "selection"), expected, check_dtype=False)
    reference = "rest" if comparison == "rest" else "cohort"
    assert pane.reference == reference and set(pane.table["reference"]) == {reference}
    assert pane.groups == {reference: N - 200 if comparison == "rest" else N, "selection": 200}
    shown = pane._table.object
    top = expected.iloc[0]
    assert shown.index[0] == top["phenotype"]  # sorted by |effect|
    assert shown.loc[top["phenotype"], "selection effect"] == f"{top['effect']:.3g}"
    pn.panel(pane).get_root()


def test_saved_subgroups_side_by_side(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    manager = SubgroupManager(state)
    pane = ComparePane(state)
    older = manager.save_condition("older", "age >= 62")
    women = manager.save_condition("women", 'sex == "female"')
    assert pane.param.subgroups.objects == ["older", "women"]  # offered as soon as saved
    state.select(np.arange(100))
    pane.subgroups = ["older", "women"]
    rest = np.ones(N, bool)
    rest[:100] = False
    for name, group in (("older", older), ("women", women)):
        expected = _expected(cohort, manager.store.members(name), rest)
        pd.testing.assert_frame_equal(_rows(pane.table, name), expected, check_dtype=False)
        assert pane.groups[name] == group.n
    assert list(pane.groups) == ["rest", "selection", "older", "women"]
    assert {"older effect", "women q", "selection statistic"} <= set(pane._table.object.columns)

    # Accuracy per group equals subgroup_metrics on the same subjects.
    tasks = cohort.prediction_tasks()
    groups = {"rest": rest, "selection": state.selection, "older": manager.store.members("older")}
    expected = subgroup_metrics(cohort.phenotypes, tasks, cohort.predictions, groups)
    got = pane.accuracy[pane.accuracy["group"].isin(list(groups))]
    keys = ["phenotype", "latent", "group", "metric"]
    merged = got.merge(expected, on=keys, suffixes=("", "_expected"))
    assert len(merged) == len(expected)
    assert np.allclose(merged["value"], merged["value_expected"], equal_nan=True)

    # A subgroup as the comparison group: it is the reference and leaves the compared groups.
    state.comparison = "older"
    assert pane.reference == "older" and "older" not in set(pane.table["group"])
    expected = _expected(cohort, state.selection, manager.store.members("older"))
    pd.testing.assert_frame_equal(_rows(pane.table, "selection"), expected, check_dtype=False)

    # Renaming in the manager re-offers the names; the chosen one that vanished is dropped.
    state.comparison = "rest"
    manager.rename("women", "female")
    assert pane.param.subgroups.objects == ["older", "female"] and pane.subgroups == ["older"]
    assert pane.compare(["older", "female"]) is pane.table
    assert set(pane.table["group"]) == {"selection", "older", "female"}
    pn.panel(pane).get_root()


def test_histograms_are_normalised_per_group(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = ComparePane(state, phenotypes=["age", "af"], bins=10)
    state.select(np.arange(150))
    frame, hidden = pane.distributions["age"]
    assert hidden == {} and list(dict.fromkeys(frame["group"])) == ["rest", "selection"]
    sel = frame[frame["group"] == "selection"]
    edges = np.r_[sel["left"], sel["right"].iloc[-1]]
    expected, _ = np.histogram(cohort.phenotype("age")[:150], bins=edges)
    assert np.array_equal(sel["count"], expected)
    assert np.isclose((sel["density"] * (sel["right"] - sel["left"])).sum(), 1.0)
    bars, _ = pane.distributions["af"]
    assert np.isclose(bars[bars["group"] == "selection"]["proportion"].sum(), 1.0)
    assert len(pane._histograms.objects) == 2


def test_continuous_histograms_keep_their_own_density_axes(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = ComparePane(state, phenotypes=["age", "lv_mass", "lvef"], bins=10)
    state.select(np.arange(150))
    root = pn.panel(pane).get_root()
    figures = [m for m in root.select({"type": Plot}) if m.title is not None and str(m.title.text) in pane.phenotypes]
    assert len(figures) == 3
    # Densities per year, per gram, per percent: one shared range would flatten the narrow ones.
    assert len({id(f.y_range) for f in figures}) == 3


def test_privacy_floor_hides_small_groups_everywhere(cohort: Cohort) -> None:
    state = ExplorerState(cohort, policy=PrivacyPolicy(min_group_size=10))
    manager = SubgroupManager(state)
    pane = ComparePane(state, phenotypes=["age", "sex"])
    manager.save_condition("big", "age >= 55")
    state.comparison = "all"  # against "rest", see test_small_selection_against_rest_hides_everything
    state.select(np.arange(7))  # below the floor
    pane.subgroups = ["big"]
    assert set(pane.hidden) == {"selection"} and "fewer than 10 subjects (7)" in pane.message

    selection = pane.table[pane.table["group"] == "selection"]
    assert selection["hidden"].all() and selection[NUMBERS].isna().all().all()
    assert selection["reason"].str.contains("fewer than 10").all()
    assert not pane.table[pane.table["group"] == "big"]["hidden"].any()
    assert (pane._table.object.filter(like="selection ") == "hidden (n < 10)").all().all()
    for frame, hidden in pane.distributions.values():
        assert "selection" not in set(frame["group"]) and "selection" in hidden
    accuracy = pane.accuracy[pane.accuracy["group"] == "selection"]
    assert accuracy["hidden"].all() and accuracy["value"].isna().all()
    assert (pane._accuracy.object["selection"] == "hidden (n < 10)").all()
    effect_groups = set(pane._effect_pipe.data["group"])
    assert effect_groups == {"big"}
    assert "hidden" in pane._summary.object

    # A comparison group below the floor hides every comparison with it.
    state.select(np.arange(300, 305))
    manager.save_selection("few")
    state.select(np.arange(100))
    state.comparison = "few"
    assert "few" in pane.hidden
    assert pane.table["hidden"].all() and pane.table[NUMBERS].isna().all().all()
    for frame, hidden in pane.distributions.values():
        assert "few" not in set(frame["group"])
    assert (pane._table.object["few mean"] == "hidden (n < 10)").all()
    pn.panel(pane).get_root()


def test_small_selection_against_rest_hides_everything(cohort: Cohort) -> None:
    # The rest is the cohort minus the selection; with the cohort's figures shown elsewhere, any
    # figure of the rest would give the small selection's away by subtraction.
    state = ExplorerState(cohort, policy=PrivacyPolicy(min_group_size=10))
    manager = SubgroupManager(state)
    pane = ComparePane(state, phenotypes=["age"])
    manager.save_condition("big", "age >= 55")
    pane.subgroups = ["big"]
    state.select(np.arange(7))
    assert pane.table is None and pane.accuracy is None and pane.distributions == {}
    assert "rest" in pane.hidden and "whole cohort" in pane.message
    state.select(np.arange(50))  # above the floor: everything comes back
    assert pane.table is not None and not pane.table["hidden"].any()
    assert pane.distributions


def test_everyone_selected_says_the_rest_is_empty(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = ComparePane(state)
    state.select(np.arange(N))
    assert "comparison group is empty" in pane.message
