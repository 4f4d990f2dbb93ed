"""The Explorer: linked latent views, filters, decode, accuracy and subject panes over one session state."""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from lse_panel.analysis.decode import sample_indices
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.analysis.projection import Projector
from lse_panel.analysis.selection import box_mask, lasso_mask, mask_to_indices
from lse_panel.cohort.bundle import Cohort, open_bundle
from lse_panel.cohort.subgroups import BoxStep, LassoStep, Subgroup, SubgroupStore
from lse_panel.components.build_progress import BuildProgress
from lse_panel.components.compare import ComparePane
from lse_panel.components.filters import PhenotypeFilters
from lse_panel.components.latent_view import LatentPair, LatentView, selection_summary
from lse_panel.components.scheduling import served
from lse_panel.components.state import ExplorerState
from lse_panel.components.subgroups import SubgroupManager
from lse_panel.components.subject import SubjectInspector
from lse_panel.config import SETTINGS
from lse_panel.digest import checkpoint_digest

Decoder = Callable[[np.ndarray], Mapping[str, np.ndarray]]

log = logging.getLogger(__name__)


def load_decoder(cohort: Cohort) -> Decoder | None:
    """The decoder named by the bundle's manifest (``latents.<kind>.model``), or ``None``.

    Tries the fused latent's model first. Any failure (no model package, no checkpoint, torch
    missing, a checkpoint other than the one that encoded the latents) is logged and yields
    ``None``: the explorer then runs without decode panes.
    """
    latents = cohort.manifest.get("latents", {})
    kinds = sorted(latents, key=lambda k: k != "fused")
    for kind in kinds:
        model = latents[kind].get("model")
        if not model:
            continue
        path = Path(model)
        if not path.is_absolute() and cohort.path is not None:
            path = cohort.path / path
        try:
            recorded, current = latents[kind].get("model_sha256"), checkpoint_digest(path)
            if recorded != current:
                # Another model's decoder would draw its own reading of these latents, not theirs.
                log.warning(
                    "%s: the %s latents were encoded by %s, whose model.pt has changed since (digest %s, now %s); "
                    "decode panes are off. Rebuild the bundle (`lse build --out %s`) to decode it.",
                    cohort.path, kind, path, recorded or "not recorded", current, cohort.path,
                )
                return None
            from lse_panel.model.decoding import Decoder as ModelDecoder

            return ModelDecoder.from_checkpoint(path)
        except Exception as exc:  # the model layer is optional for exploring
            log.warning("could not load the decoder %s (%s); decode panes are off", path, exc)
            return None
    return None


def _optional_pane(module: str, name: str) -> type | None:
    try:
        mod = __import__(f"lse_panel.components.{module}", fromlist=[name])
        return getattr(mod, name)
    except (ImportError, AttributeError) as exc:
        log.info("%s unavailable: %s", name, exc)
        return None


class Explorer(pn.viewable.Viewer):
    """The whole explorer for one cohort; each pane also displays alone and stays linked.

    Parameters
    ----------
    cohort
        The cohort (in memory or memory-mapped from a bundle); shared read-only.
    decode
        Latents ``(k, d)`` → ``{modality: (k, *shape)}``; ``None`` turns decoding off.
    individual_level
        Show individual-level views (subject inspector, sampled subjects, id export); switch
        off as a group where access agreements forbid them.
    filters
        Phenotypes shown with a filter (default: the first few).
    min_group_size
        The privacy floor: no aggregate of fewer subjects is shown in any pane (default
        ``SETTINGS.min_group_size``; ``0`` or ``1`` turns it off).
    projectors
        Projection key → fitted projector with ``transform``, used to draw interpolation paths.

    Attributes
    ----------
    policy
        The :class:`PrivacyPolicy` every pane checks.
    store
        The cohort's :class:`SubgroupStore` (saved subgroups), shared by every pane.
    subgroups
        The :class:`SubgroupManager` pane (save, list, show, compare, export subgroups).
    """

    title = param.String(default="Latent Space Explorer", doc="Page title when served.")

    def __init__(
        self,
        cohort: Cohort,
        decode: Decoder | None = None,
        *,
        individual_level: bool = True,
        filters: Sequence[str] | None = None,
        min_group_size: int | None = None,
        projectors: Mapping[str, Projector] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.cohort = cohort
        self.decode = decode
        self.individual_level = individual_level
        floor = SETTINGS.min_group_size if min_group_size is None else min_group_size
        self.policy = PrivacyPolicy(min_group_size=floor, individual_views=individual_level)
        self.store = SubgroupStore(cohort)
        self.state = ExplorerState(cohort)
        # First: it hands the store to the state and offers the saved subgroups as comparison groups.
        self.subgroups = SubgroupManager(self.state, self.store, policy=self.policy)
        self.latent_view = LatentPair(self.state)
        self.build_progress = BuildProgress(cohort, on_new=self.latent_view.refresh_options)
        self.filters = PhenotypeFilters(
            self.state, shown=list(filters) if filters is not None else None, policy=self.policy
        )
        self.subject = SubjectInspector(self.state, decode=decode, enabled=individual_level)
        self.decode_pane = self._make_decode_pane()
        self.accuracy_pane = self._make_accuracy_pane()
        self.compare_pane = ComparePane(self.state, self.store, policy=self.policy)
        self.perturb_pane = self._make_perturb_pane()
        self.interpolate_pane = self._make_interpolate_pane(projectors)
        self._clear = pn.widgets.Button(name="Clear selection", button_type="warning", width=140)
        self._clear.on_click(self._on_clear)
        self._comparison = pn.widgets.Select.from_param(self.state.param.comparison, name="compare with", width=180)
        self.subgroups.param.watch(self._on_subgroups_saved, "names")
        self._overlays = LatentOverlays(self)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], decode: Decoder | None = None, **kwargs: Any) -> Explorer:
        """Open (memory-map) the bundle at ``path`` and build an explorer on it.

        Without ``decode``, the decoder named in the bundle's manifest is loaded if possible.
        """
        cohort = open_bundle(path)
        if decode is None:
            decode = load_decoder(cohort)
        return cls(cohort, decode, **kwargs)

    def _make_decode_pane(self) -> pn.viewable.Viewable:
        pane = _optional_pane("decode", "DecodePane")
        if pane is None or self.decode is None:
            why = "no decoder was loaded for this bundle" if self.decode is None else "the decode pane is not installed"
            return pn.pane.Alert(f"Decoding is off: {why}.", alert_type="secondary")
        options = {} if self.individual_level else {"show_subjects": False}
        return pane(self.state, decode=self.decode, policy=self.policy, **options)

    def _make_accuracy_pane(self) -> pn.viewable.Viewable:
        pane = _optional_pane("accuracy", "AccuracyPane")
        if pane is None:
            return pn.pane.Alert("The accuracy pane is not installed.", alert_type="secondary")
        if not self.cohort.predictions:
            return pn.pane.Alert(
                "No cross-fitted predictions in this bundle: run `lse build` to add them.", alert_type="secondary"
            )
        return pane(self.state, policy=self.policy)

    def _make_perturb_pane(self) -> pn.viewable.Viewable:
        pane = _optional_pane("perturb", "PerturbPane")
        if pane is None or self.decode is None:
            why = (
                "no decoder was loaded for this bundle" if self.decode is None else "the perturbation pane is not installed"
            )
            return pn.pane.Alert(f"Perturbation is off: {why}.", alert_type="secondary")
        return pane(self.state, self.decode, policy=self.policy)

    def _make_interpolate_pane(self, projectors: Mapping[str, Projector] | None) -> pn.viewable.Viewable:
        pane = _optional_pane("interpolate", "InterpolatePane")
        if pane is None or self.decode is None:
            why = (
                "no decoder was loaded for this bundle" if self.decode is None else "the interpolation pane is not installed"
            )
            return pn.pane.Alert(f"Interpolation is off: {why}.", alert_type="secondary")
        return pane(self.state, self.decode, self.store, projectors=projectors, policy=self.policy)

    # -- subgroups from Python --------------------------------------------------------------
    @property
    def subgroup_names(self) -> list[str]:
        """Names of the saved subgroups, oldest first (re-read: another session may have saved one)."""
        return self.store.names()

    def save_subgroup(self, name: str, colour: str | None = None, *, overwrite: bool = False) -> Subgroup:
        """Save the current selection as subgroup ``name`` (with the rule that made it); every pane offers it.

        Raises
        ------
        SubgroupError
            Nothing selected, a reserved or taken name, a malformed colour.
        """
        return self.subgroups.save_selection(name, colour, overwrite=overwrite)

    def compare(self, names: Sequence[str] = ()) -> pd.DataFrame:
        """Compare the selection and the subgroups ``names`` with the comparison group, phenotype by phenotype.

        Returns
        -------
        pandas.DataFrame
            The comparison pane's table (long format: group, reference, phenotype, means, effect,
            statistic, q-value...), privacy floor applied.
        """
        return self.compare_pane.compare(list(names))

    def _on_subgroups_saved(self, _: param.parameterized.Event) -> None:
        # The manager already offers the names as comparison groups; the other panes list them too.
        self.compare_pane.refresh_subgroups()
        if hasattr(self.interpolate_pane, "refresh_subgroups"):
            self.interpolate_pane.refresh_subgroups()
        self._overlays.refresh()

    # -- selection from Python --------------------------------------------------------------
    @property
    def selected_indices(self) -> np.ndarray:
        """Row indices of the current selection (sorted int64)."""
        return self.state.selection

    @property
    def selected_ids(self) -> np.ndarray:
        """Subject ids of the current selection, in row order."""
        if not self.individual_level:
            raise PermissionError("individual-level access is off for this explorer: ids cannot be exported.")
        return np.asarray(self.cohort.ids)[self.state.selection]

    @property
    def selected_phenotypes(self) -> pd.DataFrame:
        """Phenotypes of the selected subjects, indexed by subject id."""
        frame = self.cohort.phenotypes.iloc[self.state.selection]
        frame.index = pd.Index(np.asarray(self.cohort.ids)[self.state.selection], name="id")
        return frame

    def select(
        self,
        ids: Sequence[Any] | np.ndarray | None = None,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        bounds: tuple[float, float, float, float] | None = None,
        lasso: np.ndarray | Sequence[Sequence[float]] | None = None,
        on: str = "fused/umap",
        mode: str = "new",
    ) -> np.ndarray:
        """Select subjects from Python; every view follows. Give exactly one of the selectors.

        Parameters
        ----------
        ids
            Subject ids (unknown ids raise ``KeyError``).
        indices
            Row indices.
        bounds
            ``(x0, y0, x1, y1)`` box on projection ``on``.
        lasso
            Polygon vertices ``(k, 2)`` on projection ``on``.
        on
            Projection key (``"<latent kind>/<method>"``) for ``bounds`` and ``lasso``.
        mode
            ``new``, ``add``, ``intersect`` or ``subtract`` with the current region.

        Returns
        -------
        numpy.ndarray
            The new selection's row indices.
        """
        given = [v is not None for v in (ids, indices, bounds, lasso)]
        if sum(given) != 1:
            raise ValueError("select() takes exactly one of ids=, indices=, bounds=, lasso=")
        if ids is not None:
            rows = self._rows_of(ids)
        elif indices is not None:
            rows = np.asarray(indices, dtype=np.int64)
        else:
            coords = self.cohort.projection(on)
            if bounds is not None:
                mask = box_mask(coords[:, 0], coords[:, 1], bounds, on_nan="exclude")
                step = BoxStep(on, tuple(float(b) for b in bounds), mode)
            else:
                poly = np.asarray(lasso, dtype=np.float64)
                mask = lasso_mask(coords[:, 0], coords[:, 1], poly[:, 0], poly[:, 1], on_nan="exclude")
                step = LassoStep(on, tuple(poly[:, 0].tolist()), tuple(poly[:, 1].tolist()), mode)
            self.state.select(mask_to_indices(mask), mode, step=step)
            return self.state.selection
        self.state.select(rows, mode)
        return self.state.selection

    def _rows_of(self, ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        all_ids = np.asarray(self.cohort.ids)
        wanted = np.asarray(ids).astype(all_ids.dtype, copy=False)
        order = np.argsort(all_ids, kind="stable")
        pos = np.searchsorted(all_ids, wanted, sorter=order)
        pos = np.clip(pos, 0, len(all_ids) - 1)
        rows = order[pos]
        missing = all_ids[rows] != wanted
        if missing.any():
            raise KeyError(f"{int(missing.sum())} id(s) not in this cohort, e.g. {wanted[missing][:5].tolist()}")
        return rows.astype(np.int64)

    def clear(self) -> None:
        """Clear the selection and every filter."""
        self.state.clear()

    def _on_clear(self, _: Any) -> None:
        self.clear()

    # -- layout -----------------------------------------------------------------------------
    def selection_controls(self) -> pn.viewable.Viewable:
        """Selection size, mode, clear and comparison group: always visible."""
        return pn.Row(
            selection_summary(self.state),
            pn.widgets.RadioButtonGroup.from_param(self.state.param.mode, name="mode", button_type="primary",
                                                   button_style="outline"),
            self._clear,
            self._comparison,
            align="center",
        )

    def main_panes(self) -> list[pn.viewable.Viewable]:
        panes = [
            ("Decode", self.decode_pane),
            ("Accuracy", self.accuracy_pane),
            ("Compare", self.compare_pane),
            ("Perturb", self.perturb_pane),
            ("Interpolate", self.interpolate_pane),
            ("Subgroups", self.subgroups),
        ]
        if self.individual_level:
            panes.append(("Subject", self.subject))
        tabs = pn.Tabs(*panes, dynamic=False)
        if served():
            self._recompute_only_visible(tabs, [pane for _, pane in panes])
        return [self.selection_controls(), self.build_progress, self.latent_view, tabs]

    @staticmethod
    def _recompute_only_visible(tabs: pn.Tabs, panes: Sequence[Any]) -> None:
        """Served, only the visible tab's pane recomputes on a selection; the others catch up when shown.

        At 500k subjects, the five analysis panes together cost several hundred ms per lasso;
        one of them fits the interactive budget. In a notebook every pane stays live. ``panes``
        are the tabs' contents as given: ``tabs.objects`` holds what Panel rendered them as (a
        Viewer's layout), which has no scheduler.
        """
        schedulers = [getattr(pane, "scheduler", None) for pane in panes]

        def sync(*_: Any) -> None:
            for index, scheduler in enumerate(schedulers):
                if scheduler is not None:
                    scheduler.set_active(index == tabs.active)

        tabs.param.watch(sync, "active")
        sync()

    def __panel__(self) -> pn.viewable.Viewable:
        """The whole app as one layout (no template), for notebooks and embedding."""
        return pn.Row(
            pn.Column(pn.pane.Markdown("### Filters"), self.filters, width=300),
            pn.Column(*self.main_panes()),
        )

    def servable_template(self) -> pn.template.BaseTemplate:
        """The app in a template (only meaningful when served: templates do not render in notebooks)."""
        return pn.template.FastListTemplate(
            title=self.title,
            sidebar=[pn.pane.Markdown("### Filters"), self.filters],
            main=self.main_panes(),
            sidebar_width=320,
            accent="#e6007e",
        )


MAX_OVERLAY_POINTS = 2_000
"""Most subjects of each shown subgroup drawn as points on a latent view (a reproducible sample)."""


def create_subgroup_points(data: pd.DataFrame | None = None, *, x: str = "x", y: str = "y") -> hv.Points:
    """Subgroup members on a latent map, each in its subgroup's colour (``x, y, subgroup, colour`` columns)."""
    if data is None or data.empty:
        data = pd.DataFrame({x: np.empty(0), y: np.empty(0), "subgroup": np.empty(0, dtype=object),
                             "colour": np.empty(0, dtype=object)})  # fmt: skip
    return hv.Points(data, [x, y], ["subgroup", "colour"]).opts(
        color="colour", size=4, alpha=0.8, line_color="white", line_width=0.3, tools=["hover"],
    )


class LatentOverlays:
    """The shown subgroups and the interpolation path drawn over each latent view of an :class:`Explorer`.

    Wired from outside the views: each view's pane shows ``view.plot * subgroups * path``, and is
    recomposed whenever the view rebuilds its plot (new projection, latent kind or colouring).
    Subgroup points are a capped sample per subgroup (:data:`MAX_OVERLAY_POINTS`), so a large
    subgroup costs no more than a small one to draw.
    """

    def __init__(self, explorer: Explorer) -> None:
        self.explorer = explorer
        self.views: dict[str, LatentView] = dict(explorer.latent_view.views)
        self._pipes: dict[str, hv.streams.Pipe] = {}
        self._composed: dict[str, tuple[Any, Any]] = {}
        self._points: dict[str, hv.DynamicMap] = {}
        self._paths: dict[str, hv.DynamicMap] = {}
        for name, view in self.views.items():
            self._pipes[name] = hv.streams.Pipe(data=None)
            self._points[name] = hv.DynamicMap(create_subgroup_points, streams=[self._pipes[name]])
            view.param.watch(partial(self._on_view_change, name), ["kind", "method", "color_by", "width", "height"])
            self._compose(name)
        explorer.subgroups.param.watch(self._on_shown, "shown")
        self.refresh()

    def subgroup_frame(self, name: str) -> pd.DataFrame:
        """The points drawn for the shown subgroups on view ``name``'s current projection."""
        view = self.views[name]
        coords = view.coords
        parts = []
        for group, (colour, rows) in self.explorer.subgroups.shown_members().items():
            rows = sample_indices(rows, MAX_OVERLAY_POINTS)
            parts.append(pd.DataFrame({
                "x": np.asarray(coords[rows, 0], dtype=np.float64), "y": np.asarray(coords[rows, 1], dtype=np.float64),
                "subgroup": group, "colour": colour,
            }))  # fmt: skip
        return pd.concat(parts, ignore_index=True) if parts else create_subgroup_points().data

    def refresh(self) -> None:
        """Send every view the shown subgroups' points on its current projection."""
        for name in self.views:
            self._pipes[name].send(self.subgroup_frame(name))

    def overlay(self, name: str) -> Any:
        """What view ``name``'s pane shows: its plot with the subgroups (and the path, with a decoder) on top."""
        view = self.views[name]
        layers = view.plot * self._points[name]
        interpolate = self.explorer.interpolate_pane
        if hasattr(interpolate, "create_path_overlay"):
            # One path overlay per projection, reused: the pane keeps feeding every one it made.
            if view.key not in self._paths:
                self._paths[view.key] = interpolate.create_path_overlay(view.key)
            layers = layers * self._paths[view.key]
        return layers

    def _compose(self, name: str) -> None:
        view = self.views[name]
        composed = self.overlay(name)
        self._composed[name] = (view.plot, composed)
        view._pane.object = composed

    def _on_view_change(self, name: str, *_: Any) -> None:
        # The view has rebuilt its plot (its own watcher ran first) and put it in its pane alone.
        plot, composed = self._composed[name]
        view = self.views[name]
        if plot is not view.plot or view._pane.object is not composed:
            self._compose(name)
        self._pipes[name].send(self.subgroup_frame(name))

    def _on_shown(self, _: param.parameterized.Event) -> None:
        self.refresh()


# -- serving: one cohort per process, shared by every session --------------------------------
def bundle_from_argv(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The bundle path from ``--args BUNDLE`` (or a bare first argument), else ``$LSE_BUNDLE``."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    if "--args" in argv:
        rest = argv[argv.index("--args") + 1 :]
        argv = rest
    candidates = [a for a in argv if not a.startswith("-") and not a.endswith(".py")]
    return candidates[0] if candidates else env.get("LSE_BUNDLE") or None


def cached_cohort(path: str | os.PathLike[str]) -> Cohort:
    """The memory-mapped cohort at ``path``, opened once per process (``pn.state.cache``)."""
    resolved = str(Path(path).resolve())
    return pn.state.as_cached(f"lse_panel:cohort:{resolved}", open_bundle, path=resolved)


def cached_decoder(path: str | os.PathLike[str]) -> Decoder | None:
    """The bundle's decoder, loaded once per process (``None`` if it has none or it fails to load)."""
    resolved = str(Path(path).resolve())
    key = f"lse_panel:decoder:{resolved}"
    if key not in pn.state.cache:
        pn.state.cache[key] = load_decoder(cached_cohort(resolved))
    return pn.state.cache[key]


def warm_up(cohort: Cohort) -> dict[str, float]:
    """Compile the numba kernels a session will hit (rasterise, highlight, box, lasso); seconds per step.

    Numba caches compiled code per process and per argument type, and the cohort's memory-mapped
    columns have their own types, so this runs on the loaded cohort itself (``panel serve --setup``).
    """
    import time

    import holoviews as hv

    from lse_panel.components.latent_view import LatentFrames, projection_options
    from lse_panel.plotting.latent import create_latent_plot, selection_frame

    timings: dict[str, float] = {}
    frames = LatentFrames.of(cohort)
    options = projection_options(cohort)
    if not options:
        return timings
    kind = next(iter(options))
    key = f"{kind}/{'umap' if 'umap' in options[kind] else options[kind][0]}"
    specs = cohort.phenotype_specs
    colourings = [None]
    colourings += [next((n for n, s in specs.items() if s.type == "continuous"), None)]
    colourings += [next((n for n, s in specs.items() if s.type != "continuous"), None)]
    for color_by in dict.fromkeys(colourings):
        start = time.perf_counter()
        pipe = hv.streams.Pipe(data=selection_frame(frames.frame(key), np.arange(min(100, cohort.n_subjects))))
        plot = create_latent_plot(
            frames.frame(key, color_by), color_by=color_by, spec=specs.get(color_by) if color_by else None,
            selection=pipe, extent=frames.extent(key),
        )
        plot[()]
        timings[f"rasterize:{color_by or 'density'}"] = time.perf_counter() - start
    coords = frames.coords(key)
    (x0, x1), (y0, y1) = frames.extent(key)
    start = time.perf_counter()
    box_mask(coords[:, 0], coords[:, 1], (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2), on_nan="exclude")
    theta = np.linspace(0, 2 * np.pi, 50)
    lasso_mask(coords[:, 0], coords[:, 1], (x0 + x1) / 2 + np.cos(theta), (y0 + y1) / 2 + np.sin(theta),
               on_nan="exclude")
    timings["selection"] = time.perf_counter() - start
    return timings
