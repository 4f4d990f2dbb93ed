"""The Explorer: linked latent views, filters, decode, accuracy and subject panes over one session state."""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import panel as pn
import param

from lse_panel.analysis.decode import Decoder, decodable_kinds
from lse_panel.analysis.disclosure import DisclosureGuard
from lse_panel.analysis.privacy import PrivacyPolicy, default_mode
from lse_panel.analysis.projection import Projector
from lse_panel.cohort.backend import DataBackend
from lse_panel.cohort.bundle import Cohort, open_bundle
from lse_panel.cohort.rules import BoxStep, LassoStep
from lse_panel.cohort.subgroups import Subgroup
from lse_panel.components.accuracy import AccuracyPane
from lse_panel.components.build_progress import BuildProgress
from lse_panel.components.compare import ComparePane
from lse_panel.components.decode import DecodePane
from lse_panel.components.failures import FailuresPane
from lse_panel.components.filters import PhenotypeFilters
from lse_panel.components.interpolate import InterpolatePane
from lse_panel.components.latent_view import LatentPair, selection_summary
from lse_panel.components.overlays import LatentOverlays
from lse_panel.components.perturb import PerturbPane
from lse_panel.components.scheduling import served
from lse_panel.components.serving import load_decoder
from lse_panel.components.state import ExplorerState
from lse_panel.components.subgroups import SubgroupManager
from lse_panel.components.subject import SubjectInspector
from lse_panel.components.text import alert, escape_markdown, markdown
from lse_panel.palette import HIGHLIGHT
from lse_panel.sources import RawSource, open_raw_source

log = logging.getLogger(__name__)


def _raw_source(cohort: Cohort) -> RawSource | None:
    """The bundle's raw source, or ``None`` (logged) when it names none or it cannot be opened."""
    try:
        return open_raw_source(cohort)
    except Exception as exc:  # a broken raw source must not take the explorer down
        log.warning("raw records unavailable (%s); panes show reconstructions only", exc)
        return None


class Explorer(pn.viewable.Viewer):
    """The whole explorer for one cohort; each pane also displays alone and stays linked.

    Parameters
    ----------
    cohort
        The cohort (in memory or memory-mapped from a bundle); shared read-only.
    decode
        A :class:`~lse_panel.analysis.decode.Decoder` (latents of a kind → ``{modality: (k, *shape)}``);
        ``None`` turns decoding off. "Decode from" offers the latent kinds it decodes.
    privacy
        ``"aggregate"`` (groups of at least the floor only: no subject inspector, sampled
        subjects, raw records, id export, per-subject scatter or hover; counts under the floor
        shown as ``<k``; sparse map pixels hidden; a group differing from one already shown by
        fewer than k subjects hidden, see :class:`~lse_panel.analysis.disclosure.DisclosureGuard`),
        ``"full"`` (every view), or a
        :class:`PrivacyPolicy` (e.g. with a session's disclosure guard in ``checks``). By default
        the cohort's: ``full`` for a synthetic bundle or a cohort built in memory by the caller,
        ``aggregate`` for any other bundle (see :func:`lse_panel.analysis.privacy.default_mode`).
    individual_level
        Older spelling: ``True`` is ``privacy="full"``, ``False`` is ``privacy="aggregate"``.
    filters
        Phenotypes shown with a filter (default: the first few).
    min_group_size
        The privacy floor: no aggregate of fewer subjects is shown in any pane (default
        ``SETTINGS.min_group_size``; ``0`` or ``1`` turns it off).
    projectors
        Projection key → fitted projector with ``transform``, used to draw interpolation paths.
    backend
        Where the cohort's data lives and statistics run (:mod:`lse_panel.cohort.backend`);
        default: in this process. :meth:`from_bundle` with ``dask=`` makes a cluster one.

    Attributes
    ----------
    policy
        The :class:`PrivacyPolicy` whose verdicts every pane shows (``state.groups.hidden``).
    state
        The session's :class:`ExplorerState`: selection, comparison, derived groups.
    store
        The cohort's :class:`SubgroupStore` (saved subgroups), the state's, shared by every pane.
    raw_source
        Reads or regenerates subjects' raw records (:func:`lse_panel.sources.open_raw_source`), or ``None``.
    subgroups
        The :class:`SubgroupManager` pane (save, list, show, compare, export subgroups).
    failures_pane
        The :class:`FailuresPane` (slice search; click a slice to select it), or ``None`` without predictions.
    """

    title = param.String(default="Latent Space Explorer", doc="Page title when served.")

    def __init__(
        self,
        cohort: Cohort,
        decode: Decoder | None = None,
        *,
        privacy: str | PrivacyPolicy | None = None,
        individual_level: bool | None = None,
        filters: Sequence[str] | None = None,
        min_group_size: int | None = None,
        projectors: Mapping[str, Projector] | None = None,
        backend: DataBackend | None = None,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.cohort = cohort
        self.policy = _policy(cohort, privacy, individual_level, min_group_size)
        self.individual_level = individual_level = self.policy.individual_views
        self.state = ExplorerState(cohort, policy=self.policy, backend=backend)
        self.backend = self.state.backend
        self.store = self.state.store
        if decode is not None:
            kinds = decodable_kinds(decode, cohort.latents)
            decode = decode if kinds else None  # it decodes none of this cohort's latents
            if kinds:
                self.state.set_decode_kinds(kinds)
        self.decode = decode
        self.subgroups = SubgroupManager(self.state)
        self.latent_view = LatentPair(self.state)
        self.build_progress = BuildProgress(cohort, on_new=self.latent_view.refresh_options)
        self.filters = PhenotypeFilters(self.state, shown=list(filters) if filters is not None else None)
        self.raw_source = _raw_source(cohort)
        self.subject = SubjectInspector(self.state, decode=decode, raw_source=self.raw_source, enabled=individual_level)
        self.decode_pane = self._make_decode_pane()
        self.accuracy_pane = self._make_accuracy_pane()
        self.compare_pane = ComparePane(self.state)
        self.failures_pane = FailuresPane(self.state, self.subgroups) if cohort.predictions else None
        self.perturb_pane = self._make_perturb_pane()
        self.interpolate_pane = self._make_interpolate_pane(projectors)
        self._clear = pn.widgets.Button(name="Clear selection", button_type="warning", width=140)
        self._clear.on_click(self._on_clear)
        self._comparison = pn.widgets.Select.from_param(self.state.param.comparison, name="compare with", width=180)
        self.subgroups.param.watch(self._on_subgroups_saved, "names")
        path = self.interpolate_pane.create_path_overlay if isinstance(self.interpolate_pane, InterpolatePane) else None
        self.overlays = LatentOverlays(self.latent_view.views, self.subgroups, path)
        if self.failures_pane is not None:
            self.overlays.add_layer(self.failures_pane.region_overlay)
            self.failures_pane.param.watch(self._on_region_outlined, "outlined")

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_bundle(
        cls, path: str | os.PathLike[str], decode: Decoder | None = None, *, dask: Any = None, **kwargs: Any
    ) -> Explorer:
        """Open (memory-map) the bundle at ``path`` and build an explorer on it.

        Without ``decode``, the decoder named in the bundle's manifest is loaded if possible.

        Parameters
        ----------
        dask
            ``None``: the data stays in this process. ``"local"`` (a ``LocalCluster`` sized to this
            machine), a scheduler address or a ``distributed.Client``: the cohort is persisted on
            that cluster and every pane's statistics run there
            (:class:`~lse_panel.cohort.dask_backend.DaskBackend`).
        """
        backend = None
        if dask is not None:
            from lse_panel.cohort.dask_backend import DaskBackend, connect

            backend = DaskBackend(path, connect(dask))
            cohort = backend.cohort
        else:
            cohort = open_bundle(path)
        if decode is None:
            decode = load_decoder(cohort)
        return cls(cohort, decode, backend=backend, **kwargs)

    def _make_decode_pane(self) -> pn.viewable.Viewable:
        if self.decode is None:
            return _off("Decoding")
        options = {} if self.individual_level else {"show_subjects": False}
        return DecodePane(self.state, decode=self.decode, raw_source=self.raw_source, **options)

    def _make_accuracy_pane(self) -> pn.viewable.Viewable:
        if not self.cohort.predictions:
            return alert(
                "No cross-fitted predictions in this bundle: run `lse build` to add them.", alert_type="secondary"
            )
        return AccuracyPane(self.state)

    def _make_perturb_pane(self) -> pn.viewable.Viewable:
        return _off("Perturbation") if self.decode is None else PerturbPane(self.state, self.decode)

    def _make_interpolate_pane(self, projectors: Mapping[str, Projector] | None) -> pn.viewable.Viewable:
        if self.decode is None:
            return _off("Interpolation")
        return InterpolatePane(self.state, self.decode, projectors=projectors)

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

    def find_failures(self, target: str, latent: str = "fused", **options: Any) -> pd.DataFrame:
        """Where the embedding predicts ``target`` worst: see :func:`lse_panel.cohort.slices.find_failures`.

        Searched by the session's backend (on one worker of a cluster).
        """
        return self.backend.find_failures(target, latent, policy=self.policy, **options)

    def _on_region_outlined(self, event: param.parameterized.Event) -> None:
        # A failing region is outlined on the map it was found on: show that projection where its kind is shown.
        kind, _, method = event.new.partition("/")
        if kind in self.latent_view.views and method in self.latent_view.param.method.objects:
            self.latent_view.method = method

    def _on_subgroups_saved(self, _: param.parameterized.Event) -> None:
        # The manager already offers the names as comparison groups; the other panes list them too.
        self.compare_pane.refresh_subgroups()
        if isinstance(self.interpolate_pane, InterpolatePane):
            self.interpolate_pane.refresh_subgroups()
        self.overlays.refresh()

    # -- selection from Python --------------------------------------------------------------
    @property
    def selected_indices(self) -> np.ndarray:
        """Row indices of the current selection (sorted int64; on a cluster, gathered from the workers)."""
        return self.backend.rows(self.state.selection)

    @property
    def selected_ids(self) -> np.ndarray:
        """Subject ids of the current selection, in row order."""
        if not self.individual_level:
            raise PermissionError("individual-level access is off for this explorer: ids cannot be exported.")
        return self.backend.ids_at(self.selected_indices)

    @property
    def selected_phenotypes(self) -> pd.DataFrame:
        """Phenotypes of the selected subjects, indexed by subject id (individual-level: refused in aggregate mode)."""
        if not self.individual_level:
            raise PermissionError(
                "individual-level access is off for this explorer: per-subject phenotypes cannot be exported; "
                "use compare() for group summaries."
            )
        rows = self.selected_indices
        frame = pd.DataFrame({name: np.asarray(column[rows]) for name, column in self.cohort.phenotype_columns.items()})
        frame.index = pd.Index(self.backend.ids_at(rows), name="id")
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
            rows = self.backend.select_ids(ids)
        elif indices is not None:
            rows = np.asarray(indices, dtype=np.int64)
        else:
            if on not in self.cohort.projections:
                self.cohort.projection(on)  # raises, naming the projections there are
            if bounds is not None:
                members = self.backend.select_box(on, bounds)
                step = BoxStep(on, tuple(float(b) for b in bounds), mode)
            else:
                poly = np.asarray(lasso, dtype=np.float64)
                members = self.backend.select_lasso(on, poly[:, 0], poly[:, 1])
                step = LassoStep(on, tuple(poly[:, 0].tolist()), tuple(poly[:, 1].tolist()), mode)
            self.state.select(members, mode, step=step)
            return self.state.selection
        self.state.select(rows, mode)
        return self.state.selection

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
            markdown(escape_markdown(self.policy.describe()), margin=(0, 10), css_classes=["lse-privacy-mode"]),
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
            *([("Failures", self.failures_pane)] if self.failures_pane is not None else []),
            ("Perturb", self.perturb_pane),
            ("Interpolate", self.interpolate_pane),
            ("Subgroups", self.subgroups),
            *([("Subject", self.subject)] if self.individual_level else []),
        ]
        tabs = pn.Tabs(*panes, dynamic=False)
        if served():
            self._recompute_only_visible(tabs, [pane for _, pane in panes])
        return [self.selection_controls(), self.build_progress, self.latent_view, tabs]

    @staticmethod
    def _recompute_only_visible(tabs: pn.Tabs, panes: Sequence[Any]) -> None:
        """Served, only the visible tab's pane recomputes on a selection; the others catch up when shown.

        At 500k subjects, the five analysis panes together cost several hundred ms per lasso;
        one of them fits the interactive budget. In a notebook every pane stays live. ``panes``
        are the tabs' panes as given (``tabs.objects`` holds what Panel made of them, a Viewer's
        layout rather than the Viewer, which has no scheduler).
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
            pn.Column(markdown("### Filters"), self.filters, width=300),
            pn.Column(*self.main_panes()),
        )

    def servable_template(self) -> pn.template.BaseTemplate:
        """The app in a template (only meaningful when served: templates do not render in notebooks)."""
        return pn.template.FastListTemplate(
            title=self.title,
            sidebar=[markdown("### Filters"), self.filters],
            main=self.main_panes(),
            sidebar_width=320,
            accent=HIGHLIGHT,
        )


def _policy(
    cohort: Cohort, privacy: str | PrivacyPolicy | None, individual_level: bool | None, min_group_size: int | None
) -> PrivacyPolicy:
    """The explorer's policy from its arguments (see :class:`Explorer`)."""
    if isinstance(privacy, PrivacyPolicy):
        if min_group_size is not None or individual_level is not None:
            raise ValueError("give the floor and individual-level views inside the PrivacyPolicy, not beside it.")
        return privacy
    if privacy is not None and individual_level is not None and (privacy == "full") != individual_level:
        raise ValueError(f"privacy={privacy!r} and individual_level={individual_level} disagree; give one.")
    if privacy is None:
        if individual_level is not None:
            privacy = "full" if individual_level else "aggregate"
        else:
            privacy = "full" if cohort.path is None else default_mode(cohort.manifest)
    # Aggregate mode also refuses groups that differ from one already shown by fewer than k
    # subjects: per user when the server has a login (a new tab starts nothing afresh), else per session.
    checks = () if privacy == "full" else (_disclosure_guard(),)
    return PrivacyPolicy.for_mode(privacy, min_group_size=min_group_size, checks=checks)


def _disclosure_guard() -> DisclosureGuard:
    user = pn.state.user if served() else None
    return DisclosureGuard.for_user(user) if user else DisclosureGuard()


def _off(what: str) -> pn.pane.Alert:
    return alert(f"{what} is off: no decoder was loaded for this bundle.", alert_type="secondary")
