"""Datashaded latent-space views with box, lasso and click selection, linked through one ExplorerState."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import holoviews as hv
import numpy as np
import panel as pn
import param
from panel.io.document import hold

from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.rules import BoxStep, LassoStep
from lse_panel.components.state import ExplorerState
from lse_panel.components.text import markdown
from lse_panel.plotting.latent import DENSITY, create_latent_plot


def projection_options(cohort: Cohort) -> dict[str, list[str]]:
    """Latent kind → the projection methods stored for it (``"<kind>/<method>"`` keys)."""
    options: dict[str, list[str]] = {}
    for key in cohort.projections:
        kind, _, method = key.partition("/")
        options.setdefault(kind, []).append(method)
    return options


def default_pair(cohort: Cohort) -> list[str]:
    """The latent kinds shown side by side: one per declared modality with a projection (else the first two)."""
    options = projection_options(cohort)
    kinds = [m for m in cohort.modalities if m in options] or list(options)
    return kinds[:2]


class LatentView(pn.viewable.Viewer):
    """One latent space of the cohort, rasterised; box, lasso and click write to the shared state.

    Its points, extent, selections and highlight come from the session's backend
    (``state.backend``): in process, frames over the cohort's memory-mapped arrays shared by every
    session; on a cluster, dask frames whose aggregation runs on the workers.
    """

    kind = param.Selector(default=None, objects=[], doc="Latent kind whose projection is shown (ecg, mri, fused...).")
    method = param.Selector(default=None, objects=[], doc="Projection method (umap, pca...).")
    color_by = param.Selector(default=DENSITY, objects=[DENSITY], doc="Phenotype colouring the raster, or density.")
    width = param.Integer(default=460, bounds=(150, None), doc="Plot width in pixels.")
    height = param.Integer(default=420, bounds=(150, None), doc="Plot height in pixels.")
    show_controls = param.Boolean(default=True, doc="Show the kind/method/colour widgets above the plot.")

    def __init__(self, state: ExplorerState, kind: str | None = None, **params: Any) -> None:
        self.state = state
        self.cohort = state.cohort
        self.backend = state.backend
        options = projection_options(state.cohort)
        if not options:
            raise ValueError(
                "this cohort has no projections to show; run `lse build` (or `lse project`) on the bundle first."
            )
        self._methods = options
        self.param.kind.objects = list(options)
        kind = kind or params.pop("kind", None) or next(iter(options))
        if kind not in options:
            raise ValueError(f"no projection of latent kind {kind!r}; this cohort has: {', '.join(options)}")
        self.param.method.objects = options[kind]
        self.param.color_by.objects = [DENSITY, *state.cohort.phenotype_specs]
        params.setdefault("method", "umap" if "umap" in options[kind] else options[kind][0])
        super().__init__(kind=kind, **params)
        self.pipe = hv.streams.Pipe(data=None)
        self.box = hv.streams.BoundsXY(bounds=None)
        self.lasso = hv.streams.Lasso(geometry=None)
        self.tap = hv.streams.Tap(x=None, y=None)
        self.box.add_subscriber(self._on_box)
        self.lasso.add_subscriber(self._on_lasso)
        self.tap.add_subscriber(self._on_tap)
        self._layers: Callable[[str], Sequence[Any]] | None = None
        self.plot = self._build_plot()
        self._pane = pn.pane.HoloViews(self.plot, linked_axes=False, sizing_mode="fixed")
        self._on_selection()
        state.param.watch(self._on_selection, "selection")
        self.param.watch(self._on_kind, "kind")
        self.param.watch(self._on_plot_params, ["method", "color_by", "width", "height"])

    # -- what is shown --------------------------------------------------------------------
    @property
    def key(self) -> str:
        """The projection shown, ``"<kind>/<method>"``."""
        return f"{self.kind}/{self.method}"

    @property
    def coords(self) -> np.ndarray:
        return self.cohort.projection(self.key)

    def _build_plot(self) -> hv.DynamicMap:
        color_by = None if self.color_by == DENSITY else self.color_by
        plot = create_latent_plot(
            self.backend.points(self.key, color_by),
            color_by=color_by,
            spec=self.cohort.phenotype_specs.get(color_by) if color_by else None,
            selection=self.pipe,
            extent=self.backend.extent(self.key),
            title=f"{self.kind} latent space · {self.method}",
            width=self.width,
            height=self.height,
            # Re-sourced onto each new plot (rather than new streams): subscribers stay, and callers
            # may hold on to view.box / view.lasso / view.tap.
            streams=(self.box, self.lasso, self.tap),
            # Aggregate mode: no pixel (nor its hover) describes fewer subjects than the floor.
            min_count=0 if self.state.policy.individual_views else self.state.policy.min_group_size,
        )
        return plot

    def refresh_options(self) -> None:
        """Offer the projections added since this view was made (a bundle finished in the background)."""
        self._methods = projection_options(self.cohort)
        self.param.kind.objects = list(self._methods)
        self.param.method.objects = self._methods[self.kind]

    def _on_kind(self, event: param.parameterized.Event) -> None:
        methods = self._methods[event.new]
        self.param.method.objects = methods
        with param.parameterized.batch_call_watchers(self):
            if self.method not in methods:
                self.method = methods[0]
        self._on_plot_params()

    @property
    def shown(self) -> Any:
        """What the view draws: :attr:`plot` with the layers of :meth:`overlay_with` on top."""
        return self._pane.object

    def overlay_with(self, layers: Callable[[str], Sequence[Any]]) -> None:
        """Draw ``layers(key)`` over the plot, now and whenever the view rebuilds it.

        Parameters
        ----------
        layers
            Projection key (``"<kind>/<method>"``) → elements or ``DynamicMap``\ s to overlay on that
            projection (e.g. subgroup points, an interpolation path). Box, lasso and tap keep
            reaching the raster underneath.
        """
        self._layers = layers
        self._pane.object = self._compose()

    def _compose(self) -> Any:
        shown = self.plot
        for layer in self._layers(self.key) if self._layers is not None else ():
            shown = shown * layer
        return shown

    def _on_plot_params(self, *_: Any) -> None:
        self.plot = self._build_plot()
        self._pane.object = self._compose()
        self._on_selection()

    # -- selection in -----------------------------------------------------------------------
    # A drawn selection fans out to the count, both views' highlights and the filter histograms:
    # held (one message) and frozen (Bokeh recomputes the document's model graph once, not once per
    # updated plot). Measured served at 500k: server CPU per selection 1.10 s → 0.64 s (load ~9
    # on 2 cores); the count then arrives with the highlights instead of ahead of them.
    def _on_box(self, bounds: tuple[float, float, float, float] | None = None, **_: Any) -> None:
        if bounds is None:
            return
        step = BoxStep(self.key, tuple(float(b) for b in bounds), self.state.mode)
        indices = self.backend.select_box(self.key, bounds)
        with hold(freeze=True):
            self.state.select_drawn(indices, step=step)

    def _on_lasso(self, geometry: np.ndarray | None = None, **_: Any) -> None:
        if geometry is None:
            return
        geometry = np.asarray(geometry, dtype=np.float64)
        if geometry.ndim != 2 or len(geometry) < 3:
            return
        step = LassoStep(self.key, tuple(geometry[:, 0].tolist()), tuple(geometry[:, 1].tolist()), self.state.mode)
        indices = self.backend.select_lasso(self.key, geometry[:, 0], geometry[:, 1])
        with hold(freeze=True):
            self.state.select_drawn(indices, step=step)

    def _on_tap(self, x: float | None = None, y: float | None = None, **_: Any) -> None:
        if x is None or y is None:
            return
        self.state.inspected = self.backend.nearest(self.key, x, y)

    # -- selection out ----------------------------------------------------------------------
    def _on_selection(self, *_: Any) -> None:
        self.pipe.send(self.backend.highlight(self.key, self.state.selection))

    # -- layout -----------------------------------------------------------------------------
    def controls(self) -> pn.Row:
        return pn.Row(
            pn.widgets.Select.from_param(self.param.kind, name="latent", width=110),
            pn.widgets.Select.from_param(self.param.method, name="projection", width=110),
            pn.widgets.Select.from_param(self.param.color_by, name="colour by", width=150),
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.controls(), self._pane) if self.show_controls else self._pane


def selection_summary(state: ExplorerState) -> pn.pane.Markdown:
    """A line that always says how many subjects are selected (and out of how many)."""

    def text(selection: Any) -> str:
        n, total = state.backend.size(selection), state.cohort.n_subjects
        shown = state.policy.count_text(n, total)
        if shown != f"{n:,}":  # under the floor in aggregate mode: no exact count, nor its percentage
            return f"**{shown}** of {total:,} subjects selected"
        return f"**{n:,}** of {total:,} subjects selected ({100 * n / max(total, 1):.1f}%)"

    return markdown(pn.bind(text, state.param.selection), margin=(0, 10), css_classes=["lse-selection-size"])


class LatentPair(pn.viewable.Viewer):
    """Two (or more) latent views side by side, sharing one state, projection method and colouring.

    By default one view per modality that has its own latent block (the ECG and MRI latent
    spaces in the demo); a selection drawn in either is highlighted in both.
    """

    method = param.Selector(default=None, objects=[], doc="Projection method shown in every view.")
    color_by = param.Selector(default=DENSITY, objects=[DENSITY], doc="Phenotype colouring every view, or density.")

    def __init__(self, state: ExplorerState, kinds: list[str] | None = None, **params: Any) -> None:
        self.state = state
        options = projection_options(state.cohort)
        kinds = default_pair(state.cohort) if kinds is None else list(kinds)
        methods = sorted(set.intersection(*(set(options[k]) for k in kinds)))
        self.param.method.objects = methods
        self.param.color_by.objects = [DENSITY, *state.cohort.phenotype_specs]
        params.setdefault("method", "umap" if "umap" in methods else methods[0])
        super().__init__(**params)
        self.views = {
            kind: LatentView(state, kind=kind, method=self.method, color_by=self.color_by, show_controls=False)
            for kind in kinds
        }
        self.param.watch(self._sync_views, ["method", "color_by"])

    def refresh_options(self, *_: Any) -> None:
        """Offer the projections added since the pair was made; the method shown stays as it is."""
        for view in self.views.values():
            view.refresh_options()
        options = projection_options(self.state.cohort)
        self.param.method.objects = sorted(set.intersection(*(set(options[k]) for k in self.views)))

    def _sync_views(self, event: param.parameterized.Event) -> None:
        for view in self.views.values():
            setattr(view, event.name, event.new)

    def controls(self) -> pn.Row:
        return pn.Row(
            pn.widgets.Select.from_param(self.param.method, name="projection", width=120),
            pn.widgets.Select.from_param(self.param.color_by, name="colour by", width=160),
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.controls(), pn.Row(*self.views.values()))
