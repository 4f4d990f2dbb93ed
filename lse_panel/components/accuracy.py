"""The accuracy pane: how well each latent predicts each phenotype inside the selection, and elsewhere."""

from __future__ import annotations

from functools import partial

from typing import Any, Callable

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from lse_panel.analysis.decode import sample_indices
from lse_panel.analysis.metrics import PreparedMetrics, prepare_metrics, subgroup_metrics
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort.bundle import Cohort
from lse_panel.components.decode import comparison_size, privacy_reasons
from lse_panel.components.state import ExplorerState
from lse_panel.plotting.accuracy import create_metric_heatmap, create_predicted_vs_true_plot, format_metric_table
from lse_panel.components.scheduling import Scheduler
from lse_panel.components.cache import cohort_cached as shared_cohort_cached

COLUMNS = ["phenotype", "task", "latent", "group", "metric", "value", "ci_low", "ci_high", "n"]


_cohort_cached = partial(shared_cohort_cached, namespace="lse_panel.components.accuracy")



def prepared_metrics(cohort: Cohort) -> PreparedMetrics:
    """The cohort's :class:`PreparedMetrics` (predictions sorted once per process), cached.

    Call it in ``panel serve --setup`` to keep the sort (~0.3 s at 500k subjects) off the first page.

    Parameters
    ----------
    cohort
        A cohort with predictions.

    Returns
    -------
    PreparedMetrics
    """

    def build() -> PreparedMetrics:
        tasks = cohort.prediction_tasks()
        return prepare_metrics({name: cohort.phenotype(name) for name in tasks}, tasks, cohort.predictions)

    return _cohort_cached(cohort, "prepared", build)


def cohort_metrics(cohort: Cohort, *, bootstrap: bool = False, n_resamples: int = 200, seed: int = 0) -> pd.DataFrame:
    """Metrics over the whole cohort (group ``"cohort"``), computed once per process and cohort.

    Parameters
    ----------
    cohort
        A cohort with predictions.
    bootstrap
        Include bootstrap intervals (a separate cache entry).
    n_resamples, seed
        Bootstrap settings.

    Returns
    -------
    pandas.DataFrame
        Long format, as :func:`lse_panel.analysis.metrics.subgroup_metrics` returns.
    """
    key = ("cohort_metrics", bootstrap, n_resamples if bootstrap else 0, seed)
    prepared = prepared_metrics(cohort)
    everyone = np.ones(cohort.n_subjects, dtype=bool)
    return _cohort_cached(
        cohort,
        key,
        lambda: subgroup_metrics(
            None, None, None, {"cohort": everyone}, prepared=prepared, bootstrap=bootstrap,
            n_resamples=n_resamples, seed=seed,
        ),
    )


def mask_hidden_groups(table: pd.DataFrame, hidden: dict[str, str], policy: PrivacyPolicy) -> pd.DataFrame:
    """``table`` with the privacy floor applied: rows of ``hidden`` groups, and any row from too few subjects, masked.

    Parameters
    ----------
    table
        Long-format metrics (:func:`selection_metrics`), with ``group`` and ``n`` columns.
    hidden
        ``{group: reason}`` of whole groups not to show (:func:`~lse_panel.components.decode.privacy_reasons`).
    policy
        The privacy policy; its :meth:`~PrivacyPolicy.filter_table` masks each row whose ``n``
        (subjects with a value and a prediction) is below the floor.

    Returns
    -------
    pandas.DataFrame
        A copy: masked values are NaN, ``reason`` says why, counts stay.
    """
    # A hidden group's rows get a size of 0 in a helper column, so filter_table masks them whole.
    group_n = np.where(table["group"].isin(list(hidden)), 0, table["n"].to_numpy(dtype=float))
    out = policy.filter_table(table.assign(_group_n=group_n), ["n", "_group_n"]).drop(columns="_group_n")
    for group, reason in hidden.items():
        out.loc[out["group"] == group, "reason"] = reason
    return out


def selection_metrics(
    state: ExplorerState, *, bootstrap: bool = False, n_resamples: int = 200, seed: int = 0
) -> pd.DataFrame:
    """Metrics in the selection, its comparison group and the whole cohort, every latent kind.

    The rest of the cohort is passed as a mask (never gathered as indices), the whole cohort's
    rows are the cached cohort rows renamed, and a saved subgroup is passed as its row indices
    (``state.comparison_indices()``).

    Parameters
    ----------
    state
        The session state (selection, comparison group, cohort).
    bootstrap
        Add bootstrap intervals (slower: compute the point estimates first).
    n_resamples, seed
        Bootstrap settings.

    Returns
    -------
    pandas.DataFrame
        Long format with groups ``selection``, ``comparison`` and ``cohort``; a group with no
        subjects has NaN values and its ``reason`` says so.
    """
    cohort = state.cohort
    prepared = prepared_metrics(cohort)
    overall = cohort_metrics(cohort, bootstrap=bootstrap, n_resamples=n_resamples, seed=seed)
    groups: dict[str, np.ndarray] = {"selection": state.selection}
    if state.comparison == "rest":
        rest = np.ones(cohort.n_subjects, dtype=bool)
        rest[state.selection] = False
        groups["comparison"] = rest
    elif state.comparison != "all":
        groups["comparison"] = state.comparison_indices()
    parts = [
        subgroup_metrics(
            None, None, None, groups, prepared=prepared, bootstrap=bootstrap, n_resamples=n_resamples, seed=seed
        )
    ]
    if state.comparison == "all":
        parts.append(overall.assign(group="comparison"))
    parts.append(overall)
    return pd.concat(parts, ignore_index=True)


class AccuracyPane(pn.viewable.Viewer):
    """Prediction accuracy inside the selection vs its comparison group vs the whole cohort.

    A heatmap shows at a glance where the embedding does worse in the selection (red) than in
    the cohort, per phenotype and metric, with the latent kinds side by side; a table gives every
    value with its bootstrap 95% interval; a plot shows predicted against true values of the
    focus phenotype for a capped sample of the selection. Point estimates come first; intervals,
    slower, follow when ``bootstrap`` is on.

    Parameters
    ----------
    state
        The session's :class:`ExplorerState`; the pane watches its selection, comparison group
        and focus phenotype.
    """

    state = param.ClassSelector(class_=ExplorerState, constant=True, doc="The session state this pane renders.")
    policy = param.ClassSelector(
        class_=PrivacyPolicy, default=PrivacyPolicy(), constant=True,
        doc="Privacy floor: metrics of a group smaller than its min_group_size are masked; the pane says why.",
    )
    bootstrap = param.Boolean(
        default=True, doc="Add bootstrap 95% intervals, computed after the point estimates (about a second at 500k)."
    )
    n_resamples = param.Integer(default=200, bounds=(10, 10_000), doc="Bootstrap resamples per interval.")
    max_points = param.Integer(
        default=2_000, bounds=(10, 50_000), doc="Most subjects of the selection drawn in the predicted-vs-true plot."
    )
    metrics = param.DataFrame(
        default=None, allow_None=True, constant=True,
        doc="Last computed metrics, long format (groups selection, comparison, cohort), privacy floor "
        "applied (masked rows NaN, 'reason' says why); None before a selection.",
    )
    hidden = param.Dict(
        default={}, constant=True, doc="Groups hidden by the privacy floor: {'selection'|'comparison': reason}.",
    )
    message = param.String(default="", constant=True, doc="What the pane tells the user instead of (or above) plots.")

    def __init__(self, state: ExplorerState, **params: Any) -> None:
        super().__init__(state=state, **params)
        self._tasks = state.cohort.prediction_tasks()
        if not state.focus_phenotype and self._tasks:
            state.focus_phenotype = next(iter(self._tasks))
        self.scheduler = Scheduler()
        self._heat_pipe: hv.streams.Pipe | None = None
        self._scatter_pipe: hv.streams.Pipe | None = None
        self._scatter_key: tuple | None = None
        self._focus = pn.widgets.Select(name="Predicted vs true", options=list(self._tasks), width=220)
        if state.focus_phenotype in self._tasks:
            self._focus.value = state.focus_phenotype
        self._focus.link(state, value="focus_phenotype", bidirectional=True)
        self._bootstrap = pn.widgets.Checkbox.from_param(self.param.bootstrap, name="Bootstrap 95% intervals")
        self._alert = pn.pane.Alert("", alert_type="info", visible=False)
        self._heatmap = pn.pane.HoloViews(None, sizing_mode="fixed")
        self._table = pn.pane.DataFrame(None, sizing_mode="stretch_width", escape=True, sparsify=True)
        self._scatter = pn.pane.HoloViews(None, sizing_mode="fixed")
        self._results = pn.Column(
            pn.Row(self._heatmap, self._table),
            pn.Row(self._focus),
            self._scatter,
            sizing_mode="stretch_width",
        )
        self._layout = pn.Column(pn.Row(self._bootstrap), self._alert, self._results, sizing_mode="stretch_width")
        state.param.watch(self._on_groups_change, ["selection", "comparison"])
        state.param.watch(self._on_focus_change, ["focus_phenotype"])
        self.param.watch(self._on_bootstrap_change, ["bootstrap", "n_resamples"])
        self.param.watch(self._on_focus_change, ["max_points"])
        self._update_points()
        self._update_scatter()
        if self.bootstrap:
            self._update_intervals()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # -- scheduling ------------------------------------------------------------------------
    def _schedule(self, name: str, area: pn.viewable.Viewable, work: Callable[[], None]) -> None:
        """Recompute through the pane's :class:`~lse_panel.components.scheduling.Scheduler`."""
        self.scheduler.schedule(name, area, work)

    def _on_groups_change(self, *events: param.parameterized.Event) -> None:
        def points_then_intervals() -> None:
            self._update_points()
            # Chained, so the point estimates reach the page before the slower bootstrap starts.
            if self.bootstrap:
                self._schedule("intervals", self._table, self._update_intervals)

        self._schedule("points", self._results, points_then_intervals)
        self._schedule("scatter", self._scatter, self._update_scatter)

    def _on_focus_change(self, *events: param.parameterized.Event) -> None:
        self._schedule("scatter", self._scatter, self._update_scatter)

    def _on_bootstrap_change(self, *events: param.parameterized.Event) -> None:
        if self.bootstrap:
            self._schedule("intervals", self._table, self._update_intervals)
        else:
            self._update_points()

    # -- metrics ---------------------------------------------------------------------------
    def _empty_message(self) -> str:
        state = self.state
        if not self._tasks:
            return "This cohort has no predictions; run `lse build` to fit them."
        if state.n_selected == 0:
            return (
                "No subjects selected. Draw a box or lasso on a latent view to see how well each latent "
                "predicts their phenotypes."
            )
        return ""

    def _update_points(self) -> None:
        self._show(None if self._empty_message() else selection_metrics(self.state))

    def _update_intervals(self) -> None:
        if self._empty_message():
            return
        self._show(selection_metrics(self.state, bootstrap=True, n_resamples=self.n_resamples))

    def _show(self, table: pd.DataFrame | None) -> None:
        message = self._empty_message()
        state = self.state
        hidden: dict[str, str] = {}
        if table is not None:
            n_cmp = comparison_size(state)[0]
            hidden = privacy_reasons(self.policy, state.n_selected, n_cmp, state.comparison)
            table = mask_hidden_groups(table, hidden, self.policy)
            notes = [f"Metrics hidden: {reason}." for reason in hidden.values()]
            if n_cmp == 0:
                notes.append(
                    "The comparison group is empty: every subject is selected. Compare with the whole "
                    "cohort instead, or select fewer subjects."
                )
            message = " ".join(notes)
        with param.edit_constant(self):
            self.param.update(metrics=table, hidden=hidden, message=message)
        self._alert.object = message
        self._alert.visible = bool(message)
        self._results.visible = table is not None
        if table is None:
            return
        shown = table[table["group"] != "comparison"] if self.state.comparison == "all" else table
        # Built once; later tables only replace the data of the same Bokeh plot (~10× cheaper).
        if self._heat_pipe is None:
            self._heat_pipe = hv.streams.Pipe(data=shown)
            self._heatmap.object = create_metric_heatmap(self._heat_pipe)
        else:
            self._heat_pipe.send(shown)
        self._table.object = format_metric_table(shown)

    # -- predicted vs true -----------------------------------------------------------------
    def _update_scatter(self) -> None:
        state = self.state
        name = state.focus_phenotype
        hidden = self.policy.check(state.n_selected, "selection") if state.n_selected else None
        if self._empty_message() or name not in self._tasks or hidden:
            self._scatter.object = None
            self._scatter_key = None
            return
        rows = sample_indices(state.selection, self.max_points)
        predictions = {
            kind: np.asarray(per[name])[rows] for kind, per in state.cohort.predictions.items() if name in per
        }
        data = {"truth": np.asarray(state.cohort.phenotype(name))[rows], "predictions": predictions}
        key = (name, tuple(predictions))
        if self._scatter_key == key and self._scatter_pipe is not None:
            self._scatter_pipe.send(data)
            return
        # A new phenotype may change the plot type (scatter or box plot): build it once for it.
        spec = state.cohort.phenotype_specs.get(name)
        self._scatter_key = key
        self._scatter_pipe = hv.streams.Pipe(data=data)
        self._scatter.object = create_predicted_vs_true_plot(
            self._scatter_pipe,
            list(predictions),
            task=self._tasks[name],
            phenotype=name,
            units=spec.units if spec else "",
            categories=spec.categories if spec else (),
        )
