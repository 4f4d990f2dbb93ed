"""The accuracy pane: how well each latent predicts each phenotype inside the selection, and elsewhere."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from lse_panel.analysis.accuracy import mask_hidden_groups, selection_metrics
from lse_panel.analysis.groups import COMPARISON, SELECTION
from lse_panel.components.pane import Pane
from lse_panel.components.state import ExplorerState
from lse_panel.components.text import alert, escape_markdown, markdown
from lse_panel.plotting.accuracy import (
    FOREST_METRICS,
    create_forest_plot,
    create_metric_heatmap,
    create_predicted_vs_true_plot,
    forest_legend,
    forest_rows,
    format_metric_table,
)


class AccuracyPane(Pane):
    """Prediction accuracy inside the selection vs its comparison group vs the whole cohort.

    Three views, one click apart: forest plots of R² and AUROC with their 95% intervals, a row
    per phenotype and latent kind, the selection, its comparison group and the cohort one above
    the other (shown first); a heatmap of where the embedding does worse in the selection (red)
    than in the cohort, every metric; and the table of every value with its interval. Below, a
    plot of predicted against true values of the focus phenotype for a capped sample of the
    selection. Estimates and intervals come from the groups' sufficient statistics in one step
    (:mod:`lse_panel.analysis.metric_statistics`); only the view on show is drawn.

    Parameters
    ----------
    state
        The session's :class:`ExplorerState`; the pane watches its groups and focus phenotype, and
        masks what its privacy policy hides.
    """

    intervals = param.Boolean(
        default=True, doc="Show 95% intervals (analytic, from the same sums as the estimates: no extra pass)."
    )
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

    def __init__(self, state: ExplorerState, **params: Any) -> None:
        super().__init__(state=state, **params)
        self._tasks = state.cohort.prediction_tasks()
        if not state.focus_phenotype and self._tasks:
            state.focus_phenotype = next(iter(self._tasks))
        self._heat_pipe: hv.streams.Pipe | None = None
        self._forest_pipes: dict[str, hv.streams.Pipe] = {}
        self._forest_key: tuple | None = None
        self._shown: pd.DataFrame | None = None
        self._stale: set[int] = set()
        self._scatter_pipe: hv.streams.Pipe | None = None
        self._scatter_key: tuple | None = None
        self._focus = pn.widgets.Select(name="Predicted vs true", options=list(self._tasks), width=220)
        if state.focus_phenotype in self._tasks:
            self._focus.value = state.focus_phenotype
        self._focus.link(state, value="focus_phenotype", bidirectional=True)
        self._intervals = pn.widgets.Checkbox.from_param(self.param.intervals, name="95% intervals")
        self._alert = alert("", alert_type="info", visible=False)
        self._forests = pn.Row()
        self._heatmap = pn.pane.HoloViews(None, sizing_mode="fixed")
        self._table = pn.pane.DataFrame(None, sizing_mode="stretch_width", escape=True, sparsify=True)
        self._scatter = pn.Row()  # one plot per latent kind: see _update_scatter
        self._views = pn.Tabs(
            ("Intervals", pn.Column(pn.pane.HTML(forest_legend(), margin=(0, 10)), self._forests)),
            ("Change vs cohort", self._heatmap),
            ("Table", self._table),
            sizing_mode="stretch_width",
        )
        self._views.param.watch(self._on_view_change, ["active"])
        # One point per subject is individual-level: in aggregate mode the scatter is never built.
        scatter_note = state.policy.check_individual("The predicted-vs-true scatter (one point per subject)")
        self._scatter_note = markdown(escape_markdown(scatter_note or ""), visible=bool(scatter_note))
        self._results = pn.Column(
            self._views, *([] if scatter_note else [pn.Row(self._focus)]), self._scatter_note, self._scatter,
            sizing_mode="stretch_width",
        )
        self._layout = pn.Column(pn.Row(self._intervals), self._alert, self._results, sizing_mode="stretch_width")
        state.param.watch(self._on_groups_change, ["groups"])
        state.param.watch(self._on_focus_change, ["focus_phenotype"])
        self.param.watch(self._on_intervals_change, ["intervals"])
        self.param.watch(self._on_focus_change, ["max_points"])
        self._update_metrics()
        self._update_scatter()

    # -- scheduling ------------------------------------------------------------------------
    def _on_groups_change(self, *events: param.parameterized.Event) -> None:
        self._schedule("metrics", self._results, self._update_metrics)
        self._schedule("scatter", self._scatter, self._update_scatter)

    def _on_focus_change(self, *events: param.parameterized.Event) -> None:
        self._schedule("scatter", self._scatter, self._update_scatter)

    def _on_intervals_change(self, *events: param.parameterized.Event) -> None:
        self._schedule("metrics", self._results, self._update_metrics)

    def _on_view_change(self, *events: param.parameterized.Event) -> None:
        self._schedule("view", self._views, self._render_view)

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

    def compute_metrics(self) -> pd.DataFrame:
        """Metrics in the selection, its comparison group and the cohort (privacy floor not yet applied)."""
        return selection_metrics(self.state.groups, intervals=self.intervals)

    def _update_metrics(self) -> None:
        self._show(None if self._empty_message() else self.compute_metrics())

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
        self._set(metrics=table, hidden=hidden, message=message)
        self._alert.object = escape_markdown(message)
        self._alert.visible = bool(message)
        self._results.visible = table is not None
        if table is None:
            return
        self._shown = table[table["group"] != "comparison"] if self.state.comparison == "all" else table
        self._stale = set(range(len(self._views)))
        self._render_view()

    def _render_view(self) -> None:
        """Draw the view on show with the last metrics; the others wait until they are shown (the table costs ~25 ms)."""
        view = self._views.active
        if self._shown is None or view not in self._stale:
            return
        self._stale.discard(view)
        shown = self._shown
        if view == 0:
            self._render_forests(shown)
        elif view == 1:
            # Built once; later tables only replace the data of the same Bokeh plot (~10× cheaper).
            if self._heat_pipe is None:
                self._heat_pipe = hv.streams.Pipe(data=shown)
                self._heatmap.object = create_metric_heatmap(self._heat_pipe)
            else:
                self._heat_pipe.send(shown)
        else:
            self._table.object = format_metric_table(shown)

    def _render_forests(self, shown: pd.DataFrame) -> None:
        rows = {metric: forest_rows(shown, metric)[1] for metric in FOREST_METRICS}
        rows = {metric: labels for metric, labels in rows.items() if labels}
        key = tuple((metric, tuple(labels)) for metric, labels in rows.items())
        if key != self._forest_key:
            self._forest_key = key
            self._forest_pipes = {metric: hv.streams.Pipe(data=shown) for metric in rows}
            self._forests.objects = [
                # Not linked: the plots' row axes share a name but not their rows (Panel links such axes).
                pn.pane.HoloViews(
                    create_forest_plot(pipe, metric=metric, labels=rows[metric]), sizing_mode="fixed", linked_axes=False
                )
                for metric, pipe in self._forest_pipes.items()
            ]
            return
        for pipe in self._forest_pipes.values():
            pipe.send(shown)

    # -- predicted vs true -----------------------------------------------------------------
    def _update_scatter(self) -> None:
        state = self.state
        name = state.focus_phenotype
        if (
            not state.policy.individual_views
            or self._empty_message()
            or name not in self._tasks
            or state.groups.is_hidden(SELECTION)
        ):
            self._scatter.objects = []
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
        plots = create_predicted_vs_true_plot(
            self._scatter_pipe,
            list(predictions),
            task=self._tasks[name],
            phenotype=name,
            units=spec.units if spec else "",
            categories=spec.categories if spec else (),
        )
        # One pane per latent kind in a Row, not the Layout in one pane: Panel draws a HoloViews
        # Layout as a Bokeh GridPlot, a container without a layout of its own, which BokehJS never
        # lays out this deep (see ComparePane's histograms): served, the plots' frames measured
        # 0×0 px in 260×240 px elements. Panel links the panes' shared axes as the Layout did.
        self._scatter.objects = [pn.pane.HoloViews(plot, sizing_mode="fixed") for plot in plots.values()]
