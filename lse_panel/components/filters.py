"""Phenotype filters with distributions over the cohort and the selection (the paper's panel A)."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param

from lse_panel.analysis.groups import SELECTION
from lse_panel.components.sessions import on_session_end, release_js_links
from lse_panel.components.state import ExplorerState
from lse_panel.components.text import alert, escape_html, escape_markdown, escaped_options
from lse_panel.plotting.latent import create_distribution_plot

DEFAULT_SHOWN = 6
"""Phenotypes shown with a filter when the caller names none (the first ones of the bundle)."""


class PhenotypeFilters(pn.viewable.Viewer):
    """A range slider (continuous) or category choice (binary/categorical) per chosen phenotype.

    Each filter sits above a small histogram of the phenotype over the whole cohort (grey) and
    over the current selection (highlight). Moving a filter writes ``state.filters``; the state
    then restricts the drawn region to subjects passing every filter.

    The selection's histograms obey the session's privacy verdicts (``state.groups.hidden``):
    below the floor (or when the subjects left out are that few, which the cohort's histogram
    would then give away) they are not drawn, and a note says why. Every phenotype is drawn on
    its one binning over the cohort (:func:`~lse_panel.cohort.derived.phenotype_binning`), the
    same edges the comparison pane uses.
    """

    shown = param.ListSelector(default=[], objects=[], doc="Phenotypes shown with a filter and a histogram.")
    hidden = param.String(
        default="", constant=True, doc="Why the selection's histograms are hidden; empty while they are shown.",
    )

    def __init__(self, state: ExplorerState, shown: list[str] | None = None, **params: Any) -> None:
        self.state = state
        self.cohort = state.cohort
        names = list(state.cohort.phenotype_specs)
        self.param.shown.objects = names
        params["shown"] = list(shown) if shown is not None else names[:DEFAULT_SHOWN]
        super().__init__(**params)
        self._widgets: dict[str, pn.widgets.Widget] = {}
        self._pipes: dict[str, hv.streams.Pipe] = {}
        self._plots: dict[str, pn.viewable.Viewable] = {}
        self._updating = False
        self._column = pn.Column(sizing_mode="stretch_width")
        self._note = alert("", alert_type="info", visible=False, margin=(0, 5))
        self._check_privacy()
        self._rebuild()
        state.param.watch(self._on_groups, "groups")
        state.param.watch(self._sync_widgets, "filters")
        self.param.watch(self._rebuild, "shown")
        # Served, the range sliders' JS links would otherwise pin this session's whole explorer in
        # Panel's process-wide registry after the page closes (see release_js_links).
        on_session_end(lambda: release_js_links(self._widgets.values()))

    # -- building ---------------------------------------------------------------------------
    def _widget(self, name: str) -> pn.widgets.Widget:
        spec = self.cohort.phenotype_specs[name]
        if spec.type == "continuous":
            lo, hi = self.state.backend.finite_range(name)
            hi = hi if hi > lo else lo + 1.0
            rule = self.state.filters.get(name, (lo, hi))
            widget = pn.widgets.EditableRangeSlider(
                # The slider's title is a Bokeh Div, rendered as HTML: units come from the bundle.
                name=escape_html(f"{name} ({spec.units})" if spec.units else name),
                start=lo, end=hi, value=(rule[0] if rule[0] is not None else lo, rule[1] if rule[1] is not None else hi),
                step=(hi - lo) / 200, format="0.[00]", sizing_mode="stretch_width",
            )
            widget.param.watch(self._on_widget, "value_throttled")
        else:
            options = {label: code for code, label in enumerate(spec.categories)}
            value = list(self.state.filters.get(name, options.values()))
            widget = pn.widgets.CheckButtonGroup(
                name=name, options=options, value=value, button_type="primary", button_style="outline", sizing_mode="stretch_width",
            )
            widget.param.watch(self._on_widget, "value")
        widget.tags = [name]
        return widget

    def _plot(self, name: str) -> pn.pane.HoloViews:
        spec = self.cohort.phenotype_specs[name]
        binning = self.state.backend.binning(name)
        edges = binning.edges if binning.continuous else binning.categories
        pipe = hv.streams.Pipe(data=self._selection_counts(name))
        self._pipes[name] = pipe

        def draw(data: np.ndarray) -> hv.Overlay:
            rule = self.state.filters.get(name)
            span = tuple(rule) if spec.type == "continuous" and rule is not None else None
            # Aggregate mode: bars of fewer than k subjects (the cohort's extremes too) are not drawn.
            cohort_counts = self.state.policy.suppress_small_cells(binning.cohort_counts)
            return create_distribution_plot(name, spec, edges, cohort_counts, data, selected_range=span)

        # Unlinked: Panel would otherwise share the y-axis of every histogram on the page.
        plot = hv.DynamicMap(draw, streams=[pipe]).opts(framewise=True)
        return pn.pane.HoloViews(plot, margin=(0, 5), linked_axes=False)

    def _rebuild(self, *_: Any) -> None:
        items = []
        for name in self.shown:
            if name not in self._widgets:
                self._widgets[name] = self._widget(name)
                self._plots[name] = self._plot(name)
            items.append(pn.Column(self._widgets[name], self._plots[name], margin=(0, 0, 8, 0)))
        self._column[:] = items

    # -- events -----------------------------------------------------------------------------
    def _on_widget(self, event: param.parameterized.Event) -> None:
        if self._updating:
            return
        name = event.obj.tags[0]
        spec = self.cohort.phenotype_specs[name]
        filters = dict(self.state.filters)
        if spec.type == "continuous":
            lo, hi = event.new
            start, end = event.obj.start, event.obj.end
            # A slider back at its ends filters nothing (and keeps subjects with missing values).
            if lo <= start and hi >= end:
                filters.pop(name, None)
            else:
                filters[name] = (None if lo <= start else float(lo), None if hi >= end else float(hi))
        else:
            codes = tuple(sorted(int(c) for c in event.new))
            if len(codes) == len(spec.categories):
                filters.pop(name, None)
            else:
                filters[name] = codes
        self.state.filters = filters

    def _sync_widgets(self, event: param.parameterized.Event) -> None:
        """Follow filters set elsewhere (Clear, Python) without echoing them back."""
        self._updating = True
        try:
            for name, widget in self._widgets.items():
                rule = event.new.get(name)
                if isinstance(widget, pn.widgets.EditableRangeSlider):
                    lo, hi = (None, None) if rule is None else rule
                    value = (widget.start if lo is None else lo, widget.end if hi is None else hi)
                    if tuple(widget.value) != value:
                        widget.value = value
                else:
                    spec = self.cohort.phenotype_specs[name]
                    value = list(range(len(spec.categories))) if rule is None else list(rule)
                    if sorted(widget.value) != sorted(value):
                        widget.value = value
        finally:
            self._updating = False

    def _check_privacy(self) -> None:
        reason = self.state.groups.hidden.get(SELECTION, "")
        with param.edit_constant(self):
            self.hidden = reason
        self._note.object = escape_markdown(f"The selection's distributions are not drawn: {reason}.") if reason else ""
        self._note.visible = bool(reason)

    def _selection_counts(self, name: str) -> np.ndarray:
        """The selection's counts per bin, or zeros (nothing drawn) when the privacy policy hides them."""
        backend = self.state.backend
        if self.hidden:
            return np.zeros(backend.binning(name).n_bins, dtype=np.int64)
        return self.state.policy.suppress_small_cells(backend.bin_counts(name, self.state.groups.selection))

    def _on_groups(self, *_: Any) -> None:
        self._check_privacy()
        for name, pipe in self._pipes.items():
            pipe.send(self._selection_counts(name))

    def __panel__(self) -> pn.viewable.Viewable:
        chooser = pn.widgets.MultiChoice.from_param(self.param.shown, name="phenotypes", sizing_mode="stretch_width")
        chooser.options = escaped_options(self.param.shown.objects)
        return pn.Column(chooser, self._note, self._column, sizing_mode="stretch_width")
