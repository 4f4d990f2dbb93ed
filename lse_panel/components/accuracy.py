"""The accuracy pane: how well each latent predicts each phenotype inside the selection, and elsewhere."""

from __future__ import annotations

from typing import Any, Callable

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from lse_panel.analysis.accuracy import mask_hidden_groups
from lse_panel.analysis.groups import COMPARISON, SELECTION
from lse_panel.components.scheduling import Scheduler
from lse_panel.components.state import ExplorerState
from lse_panel.plotting.accuracy import create_metric_heatmap, create_predicted_vs_true_plot, format_metric_table


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
        The session's :class:`ExplorerState`; the pane watches its groups and focus phenotype, and
        masks what its privacy policy hides.
    """

    state = param.ClassSelector(class_=ExplorerState, constant=True, doc="The session state this pane renders.")
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
        state.param.watch(self._on_groups_change, ["groups"])
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

    def compute_metrics(self, *, bootstrap: bool = False) -> pd.DataFrame:
        """Metrics in the selection, its comparison group and the cohort (privacy floor not yet applied)."""
        n_resamples = self.n_resamples if bootstrap else 200
        return self.state.backend.selection_metrics(self.state.groups, bootstrap=bootstrap, n_resamples=n_resamples)

    def _update_points(self) -> None:
        self._show(None if self._empty_message() else self.compute_metrics())

    def _update_intervals(self) -> None:
        if self._empty_message():
            return
        self._show(self.compute_metrics(bootstrap=True))

    def _show(self, table: pd.DataFrame | None) -> None:
        message = self._empty_message()
        state, groups = self.state, self.state.groups
        hidden: dict[str, str] = {}
        if table is not None:
            n_cmp = groups.size(COMPARISON)
            hidden = {label: reason for label, reason in groups.hidden.items() if label in (SELECTION, COMPARISON)}
            table = mask_hidden_groups(table, hidden, state.policy)
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
        if self._empty_message() or name not in self._tasks or state.groups.is_hidden(SELECTION):
            self._scatter.object = None
            self._scatter_key = None
            return
        rows = state.backend.sample(state.groups.selection, self.max_points)
        predictions = {
            kind: np.asarray(per[name][rows]) for kind, per in state.cohort.predictions.items() if name in per
        }
        data = {"truth": np.asarray(state.cohort.phenotype(name)[rows]), "predictions": predictions}
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
