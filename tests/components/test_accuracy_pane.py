"""The accuracy pane, driven by the session state: its numbers are scikit-learn's on the same subjects."""

from __future__ import annotations


import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import pytest
from bokeh.models import Plot
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score

from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.derived import cohort_metrics, prepared_metrics
from lse_panel.components.accuracy import AccuracyPane
from lse_panel.components.state import ExplorerState
from lse_panel.plotting.accuracy import forest_rows
from lse_panel.testing import tiny_cohort

N = 400



@pytest.fixture(scope="session")
def cohort() -> Cohort:
    return tiny_cohort(N)


def _sklearn(cohort: Cohort, latent: str, phenotype: str, rows: np.ndarray) -> dict[str, float]:
    truth = cohort.phenotype(phenotype)[rows]
    pred = cohort.predictions[latent][phenotype][rows].astype(np.float64)
    if cohort.prediction_tasks()[phenotype] == "regression":
        return {"r2": r2_score(truth, pred), "mae": mean_absolute_error(truth, pred)}
    return {"auroc": roc_auc_score(truth, pred), "balanced_accuracy": balanced_accuracy_score(truth, pred >= 0.5)}


def _value(table: pd.DataFrame, **where: str) -> float:
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        mask &= table[column].to_numpy() == value
    (value,) = table.loc[mask, "value"].to_numpy()
    return float(value)


def test_empty_selection_shows_a_message(cohort: Cohort) -> None:
    pane = AccuracyPane(ExplorerState(cohort))
    assert pane.metrics is None
    assert "No subjects selected" in pane.message
    pn.panel(pane).get_root()


@pytest.mark.parametrize("comparison", ["rest", "all"])
def test_values_equal_scikit_learn_on_the_same_subjects(cohort: Cohort, comparison: str) -> None:
    state = ExplorerState(cohort, comparison=comparison)
    pane = AccuracyPane(state, intervals=False)
    # A region of the latent space, holding cases and controls of every binary phenotype on both sides.
    selection = np.flatnonzero(cohort.latent("fused")[:, 2] > 0)
    state.select(selection)
    table = pane.metrics
    groups = {
        "selection": selection,
        "comparison": np.setdiff1d(np.arange(N), selection) if comparison == "rest" else np.arange(N),
        "cohort": np.arange(N),
    }
    tasks = cohort.prediction_tasks()
    assert set(tasks.values()) == {"regression", "classification"}
    for group, rows in groups.items():
        for latent in ("ecg", "mri", "fused"):
            for phenotype in tasks:
                for metric, expected in _sklearn(cohort, latent, phenotype, rows).items():
                    got = _value(table, group=group, latent=latent, phenotype=phenotype, metric=metric)
                    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9), (group, latent, phenotype, metric)
    assert pane.message == ""
    assert table["ci_low"].isna().all()  # intervals off: point estimates only


def test_every_subject_selected_leaves_rest_empty_with_a_message(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = AccuracyPane(state, intervals=False)
    state.select(np.arange(N))
    assert "comparison group is empty" in pane.message
    comparison = pane.metrics[pane.metrics["group"] == "comparison"]
    assert comparison["value"].isna().all() and (comparison["n"] == 0).all()
    pn.panel(pane).get_root()
    state.comparison = "all"
    assert pane.message == ""


def test_intervals_surround_the_estimates(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = AccuracyPane(state)
    state.select(np.arange(0, N, 2))
    table = pane.metrics.dropna(subset=["value"])
    assert table["ci_low"].notna().all()
    assert (table["ci_low"] <= table["value"] + 1e-9).all() and (table["value"] <= table["ci_high"] + 1e-9).all()
    assert pane._table.object is None  # the table view is drawn only once it is shown
    pane._views.active = 2
    assert "[" in pane._table.object.iloc[0, 0]  # the table shows the interval
    pane.intervals = False
    assert pane.metrics["ci_low"].isna().all()


def test_cohort_metrics_are_computed_once_per_process(cohort: Cohort) -> None:
    first = cohort_metrics(cohort)
    assert cohort_metrics(cohort) is first
    assert prepared_metrics(cohort) is prepared_metrics(cohort)
    assert cohort_metrics(tiny_cohort(50)) is not first  # another cohort, another entry
    assert set(first["group"]) == {"cohort"}


def test_predicted_vs_true_follows_the_focus_phenotype(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = AccuracyPane(state, intervals=False, max_points=25)
    assert state.focus_phenotype in cohort.prediction_tasks()  # defaults to the first one
    selection = np.arange(0, N, 3)
    state.select(selection)
    data = pane._scatter_pipe.data
    assert len(data["truth"]) == 25
    assert set(data["predictions"]) == {"ecg", "mri", "fused"}
    plots = [id(plot) for plot in pane._scatter.objects]
    assert len(plots) == 3  # one plot per latent kind
    state.focus_phenotype = "af"
    assert pane._focus.value == "af"  # the widget follows the state, and back
    assert [id(plot) for plot in pane._scatter.objects] != plots
    pane._focus.value = "lvef"
    assert state.focus_phenotype == "lvef"
    state.select(selection[:10])
    np.testing.assert_array_equal(pane._scatter_pipe.data["truth"], cohort.phenotype("lvef")[selection[:10]])
    root = pn.panel(pane).get_root()
    # One pane per latent kind, their axes linked as one HoloViews Layout's were: same ranges.
    figures = [m for m in root.select({"type": Plot}) if m.title is not None and ": n=" in str(m.title.text)]
    assert len(figures) == 3
    assert len({id(f.x_range) for f in figures}) == 1 and len({id(f.y_range) for f in figures}) == 1


def test_forest_plots_draw_every_interval_one_row_per_phenotype_and_latent(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = AccuracyPane(state)
    state.select(np.arange(0, N, 2))
    tasks = cohort.prediction_tasks()
    assert set(pane._forest_pipes) == {"r2", "auroc"}  # the first view, drawn with the point estimates
    for metric, task in (("r2", "regression"), ("auroc", "classification")):
        sent = pane._forest_pipes[metric].data
        frame, labels = forest_rows(sent, metric)
        n_phenotypes = sum(t == task for t in tasks.values())
        assert len(labels) == n_phenotypes * 3 and labels[0].endswith(" · ecg")
        assert set(frame["group"]) == {"selection", "comparison", "cohort"}
        assert frame["ci_low"].notna().all() and (frame["ci_low"] <= frame["value"]).all()
        overlay = pane._forests[list(pane._forest_pipes).index(metric)].object
        figure = hv.render(overlay)
        assert list(figure.yaxis[0].major_label_overrides.values()) == labels  # every row named
    pipes = dict(pane._forest_pipes)
    state.select(np.arange(0, N, 3))
    assert pane._forest_pipes == pipes  # the same plots, new data
    assert pane._forest_pipes["r2"].data is not sent


def test_heatmap_and_table_show_every_latent(cohort: Cohort) -> None:
    state = ExplorerState(cohort)
    pane = AccuracyPane(state, intervals=False)
    state.select(np.arange(100))
    assert pane._heat_pipe is None  # not on show yet
    pane._views.active = 1
    pane._views.active = 2
    table = pane._table.object
    assert list(table.columns.get_level_values(0).unique()) == ["ecg", "mri", "fused"]
    assert {"selection", "comparison", "cohort"} == set(table.columns.get_level_values(1))
    heat = pane._heat_pipe.data
    assert set(heat["group"]) == {"selection", "comparison", "cohort"}
    state.comparison = "all"  # comparison equals the cohort: not shown twice
    assert set(pane._table.object.columns.get_level_values(1)) == {"selection", "cohort"}
    assert set(pane._heat_pipe.data["group"]) == {"selection", "comparison", "cohort"}  # hidden view: not redrawn
    pane._views.active = 1
    assert set(pane._heat_pipe.data["group"]) == {"selection", "cohort"}


def test_a_saved_subgroup_as_comparison_equals_scikit_learn_on_its_rows() -> None:
    from lse_panel.components.subgroups import SubgroupManager

    cohort = tiny_cohort(N)  # its own cohort: in-memory subgroups are shared per cohort object
    state = ExplorerState(cohort)
    manager = SubgroupManager(state)
    members = np.flatnonzero(cohort.latent("fused")[:, 3] > 0)
    state.select(members)
    manager.save_selection("upper")
    pane = AccuracyPane(state, intervals=False)
    pane._views.active = 2
    selection = np.flatnonzero(cohort.latent("fused")[:, 2] > 0)
    state.select(selection)
    state.comparison = "upper"
    table = pane.metrics
    for latent in ("ecg", "mri", "fused"):
        for phenotype in cohort.prediction_tasks():
            for metric, expected in _sklearn(cohort, latent, phenotype, members).items():
                got = _value(table, group="comparison", latent=latent, phenotype=phenotype, metric=metric)
                assert got == pytest.approx(expected, rel=1e-6, abs=1e-9), (latent, phenotype, metric)
            for metric, expected in _sklearn(cohort, latent, phenotype, selection).items():
                got = _value(table, group="selection", latent=latent, phenotype=phenotype, metric=metric)
                assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert pane.message == ""
    assert {"selection", "comparison", "cohort"} == set(pane._table.object.columns.get_level_values(1))


def test_privacy_floor_masks_small_groups_and_says_why(cohort: Cohort) -> None:
    from lse_panel.analysis.privacy import PrivacyPolicy

    state = ExplorerState(cohort)
    pane = AccuracyPane(state, intervals=False)
    pane._views.active = 2
    state.select(np.arange(5))
    table = pane.metrics
    small = table[table["group"].isin(["selection", "comparison"])]
    assert small["value"].isna().all() and small["n_pos"].isna().all()
    assert small["reason"].str.contains("fewer than 10 subjects|hidden too").all()
    assert (small.loc[small["group"] == "selection", "n"] == 5).all()  # sizes stay visible
    assert table.loc[table["group"] == "cohort", "value"].notna().any()
    assert set(pane.hidden) == {"selection", "comparison"}
    assert "fewer than 10 subjects (5)" in pane.message and pane._alert.visible
    assert pane._scatter.objects == []  # no predicted-vs-true points of five subjects
    assert (pane._table.object.filter(like="selection") == "–").all().all()
    for floor in (0, 1):
        open_state = ExplorerState(cohort, policy=PrivacyPolicy(min_group_size=floor))
        open_pane = AccuracyPane(open_state, intervals=False)
        open_state.select(np.flatnonzero(cohort.phenotype("age") > -np.inf)[:5])
        selection = open_pane.metrics[open_pane.metrics["group"] == "selection"]
        assert selection["value"].notna().any() and open_pane.hidden == {}
        assert len(open_pane._scatter.objects) == 3
