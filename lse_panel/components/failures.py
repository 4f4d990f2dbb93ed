"""The failures pane: where the embedding predicts a phenotype worst, found by a slice search; a click selects a slice."""

from __future__ import annotations

import html
import logging
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import NumberFormatter
from panel.io.state import set_curdoc

from lse_panel.analysis.conditions import ConditionError
from lse_panel.analysis.privacy import PrivacyError
from lse_panel.cohort.rules import SubgroupError
from lse_panel.cohort.slices import combine_failures, slice_rule
from lse_panel.cohort.subgroups import Subgroup
from lse_panel.components.scheduling import Scheduler, served
from lse_panel.components.state import ExplorerState
from lse_panel.components.subgroups import SubgroupManager
from lse_panel.components.text import markdown
from lse_panel.config import SETTINGS
from lse_panel.plotting.accuracy import METRIC_LABELS
from lse_panel.plotting.slices import (
    TEXT_COLUMNS,
    create_region_outline,
    format_latent_metrics,
    format_slice_table,
    primary_metric,
)

__all__ = ["ALL_LATENTS", "FailuresPane"]

log = logging.getLogger(__name__)

ALL_LATENTS = "all"
"""The latent choice that searches every latent kind predicting the target, each on its own, side by side."""

_USER_ERRORS = (SubgroupError, ConditionError, PrivacyError)

_ABOUT = (
    "Searches every phenotype bin and pair of bins (up to *max conditions*), and regions of each map, for "
    "the subjects whose cross-fitted predictions of the target are worst; each slice is tested against the "
    "rest of the cohort with false-discovery-rate control over every slice tried. Click a slice to select "
    "it in both maps."
)


@dataclass(frozen=True)
class _Request:
    """What one search was asked for, fixed when the Search button was pressed."""

    target: str
    kinds: tuple[str, ...]
    options: tuple[tuple[str, Any], ...]


class FailuresPane(pn.viewable.Viewer):
    """The subgroups where the embedding predicts a phenotype worst, and a click to select one.

    Choose a target phenotype and a latent kind (or all, each searched on its own) and press
    Search: :func:`~lse_panel.cohort.slices.find_failures` runs under the session's privacy
    policy (no slice smaller than its floor), once per process for the same request
    (:func:`~lse_panel.cohort.derived.failures`), and off the interaction path when served (a
    thread; a spinner and a progress bar meanwhile). The table lists the top slices per latent
    kind: rule, size, the main metric in the slice and in the rest, the gap in loss with its
    interval, the q-value, the slices tried, and the same metric from every latent kind side by
    side. Clicking a slice selects its members in both maps through the session state (with its
    rule, so a saved subgroup re-applies), outlines a region on its map, and shows every metric per
    latent kind ("which latent kind fails where"); "Save as subgroup" keeps it.

    Every string from the bundle (rules, phenotype and latent names) reaches the page as plain
    text: table cells through Tabulator's ``plaintext`` formatter, titles and messages escaped.

    Parameters
    ----------
    state
        The session's :class:`ExplorerState` (its cohort, selection and privacy policy).
    subgroups
        The session's :class:`SubgroupManager`, through which slices are saved (default: a new one on ``state``).
    **params
        Initial values of the params below.
    """

    state = param.ClassSelector(class_=ExplorerState, constant=True, doc="The session state this pane selects in.")
    target = param.Selector(default=None, objects=[], doc="The phenotype whose predictions are judged.")
    latent = param.Selector(
        default=ALL_LATENTS, objects=[ALL_LATENTS],
        doc="The latent kind whose failures are searched, or 'all' (each kind searched on its own).",
    )
    max_conditions = param.Integer(
        default=SETTINGS.slice_max_conditions, bounds=(1, 3), doc="Most phenotype conditions in one slice (3 is slower)."
    )
    fdr = param.Number(default=SETTINGS.slice_fdr, bounds=(0.001, 0.5), doc="False discovery rate over every slice tried.")
    regions = param.Boolean(default=True, doc="Also search regions of every map for failures no phenotype names.")
    given_target = param.Boolean(
        default=False,
        doc="Judge each subject's error against subjects with a similar target value, so slices that only "
        "track the target's own tails drop out.",
    )
    top = param.Integer(default=SETTINGS.slice_top, bounds=(1, 200), doc="Slices listed per latent kind.")
    slices = param.DataFrame(
        default=None, allow_None=True, constant=True,
        doc="The last search's slices (find_failures's table, latent kinds combined); None before a search.",
    )
    chosen = param.Integer(
        default=None, allow_None=True, constant=True, doc="Row of :attr:`slices` selected in the maps, or None."
    )
    outlined = param.String(
        default="", constant=True, doc="Projection key whose map outlines the chosen region slice ('' when none)."
    )
    searching = param.Boolean(default=False, constant=True, doc="Whether a search is running.")
    message = param.String(default="", constant=True, doc="What the pane last told the user (plain text).")

    def __init__(self, state: ExplorerState, subgroups: SubgroupManager | None = None, **params: Any) -> None:
        predicted = {name for per in state.cohort.predictions.values() for name in per}
        self._tasks = {name: task for name, task in state.cohort.prediction_tasks().items() if name in predicted}
        if not self._tasks:
            raise ValueError("this cohort has no cross-fitted predictions to search; run `lse build` on it first.")
        self.param.target.objects = list(self._tasks)
        params.setdefault(
            "target", state.focus_phenotype if state.focus_phenotype in self._tasks else next(iter(self._tasks))
        )
        latent = params.pop("latent", ALL_LATENTS)  # offered once the target's latent kinds are known
        super().__init__(state=state, **params)
        self._subgroups = subgroups
        self._members: np.ndarray | None = None
        self._outline_pipes: dict[str, list[hv.streams.Pipe]] = {}
        self.scheduler = Scheduler()
        self._sync_latents()
        self.latent = latent

        self._search = pn.widgets.Button(name="Search", button_type="primary", width=100, align="end")
        self._progress = pn.indicators.Progress(value=0, max=1, width=160, visible=False, align="center")
        self._status = pn.pane.HTML("", sizing_mode="stretch_width", margin=(5, 10))
        empty = format_slice_table(_empty_slices())
        self._table = pn.widgets.Tabulator(
            empty, selectable=1, disabled=True, show_index=False, height=330, layout="fit_data_table",
            sizing_mode="stretch_width", formatters=_formatters(list(empty.columns)), widths={"slice": 290},
        )  # fmt: skip
        self._per_latent = pn.pane.DataFrame(None, escape=True, sizing_mode="stretch_width")
        self._name = pn.widgets.TextInput(name="Subgroup name", placeholder="name the chosen slice", width=260)
        self._save = pn.widgets.Button(name="Save as subgroup", button_type="success", width=150, align="end",
                                       disabled=True)  # fmt: skip
        self._save_status = pn.pane.HTML("", margin=(5, 10))
        self._results = pn.Column(
            self._table,
            pn.Row(
                pn.Column(markdown("**Which latent kind fails where** (the chosen slice)", margin=(5, 10)),
                          self._per_latent, sizing_mode="stretch_width"),
                pn.Column(pn.Row(self._name, self._save), self._save_status),
            ),
            sizing_mode="stretch_width",
        )  # fmt: skip
        controls = pn.Row(
            pn.widgets.Select.from_param(self.param.target, name="target", width=150),
            pn.widgets.Select.from_param(self.param.latent, name="latent kind", width=110),
            pn.widgets.IntInput.from_param(self.param.max_conditions, name="max conditions", width=110),
            pn.widgets.FloatInput.from_param(self.param.fdr, name="FDR", step=0.01, width=80),
            pn.widgets.Checkbox.from_param(self.param.regions, name="map regions", align="end", margin=(5, 10, 12, 10)),
            pn.widgets.Checkbox.from_param(self.param.given_target, name="beyond the target's tails", align="end",
                                           margin=(5, 10, 12, 10)),
            self._search,
        )  # fmt: skip
        self._layout = pn.Column(
            markdown(_ABOUT, margin=(0, 10)),
            controls,
            pn.Row(self._progress, self._status),
            self._results,
            sizing_mode="stretch_width",
        )
        self._search.on_click(self._on_search)
        self._save.on_click(self._on_save)
        self._table.param.watch(self._on_table_selection, "selection")
        self.param.watch(self._sync_latents, "target")
        state.param.watch(self._on_selection, "selection")
        self._say("Choose a target and press Search.")

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # -- searching -------------------------------------------------------------------------
    def _sync_latents(self, *_: Any) -> None:
        """Offer the latent kinds that predict the target (and 'all')."""
        kinds = [kind for kind, per in self.state.cohort.predictions.items() if self.target in per]
        self.param.latent.objects = [ALL_LATENTS, *kinds]
        if self.latent not in self.param.latent.objects:
            self.latent = ALL_LATENTS

    def _request(self) -> _Request:
        kinds = [k for k in self.param.latent.objects if k != ALL_LATENTS] if self.latent == ALL_LATENTS else [self.latent]
        options = {
            "max_conditions": int(self.max_conditions), "fdr": float(self.fdr), "top": int(self.top),
            "projections": "all" if self.regions else None, "given_target": bool(self.given_target),
        }  # fmt: skip
        return _Request(str(self.target), tuple(kinds), tuple(sorted(options.items())))

    def _run(self, request: _Request, progress: Callable[[int, str], None] | None = None) -> pd.DataFrame:
        """The request's slices, one latent kind at a time (each cached per process)."""
        frames = []
        for i, kind in enumerate(request.kinds):
            if progress is not None:
                progress(i, kind)
            frames.append(
                self.state.backend.failures(request.target, kind, policy=self.state.policy, **dict(request.options))
            )
        return combine_failures(frames)

    def search(self) -> pd.DataFrame:
        """Search now with the pane's settings, show the result and return it (blocking; see :attr:`slices`).

        The Search button does the same off the interaction path when served.
        """
        request = self._request()
        start = time.perf_counter()
        result = self._run(request)
        self._show(request, result, time.perf_counter() - start)
        return result

    def _on_search(self, _: Any) -> None:
        if self.searching:
            return
        if not served():
            self._begin(self._request())
            try:
                self.search()
            except (ValueError, *_USER_ERRORS) as exc:
                self._show_error(exc)
            finally:
                self._end()
            return
        # Seconds at 500k subjects: searched on a thread, so the session stays responsive; every
        # change to the page is handed back to the session's event loop.
        request, doc = self._request(), pn.state.curdoc
        self._begin(request)

        def later(callback: Callable[[], None]) -> None:
            try:
                with set_curdoc(doc):
                    pn.state.execute(callback, schedule=True)
            except Exception:  # the session closed during the search: nobody to show it to
                log.debug("failures search finished for a closed session", exc_info=True)

        def work() -> None:
            start = time.perf_counter()
            try:
                result = self._run(request, lambda i, kind: later(partial(self._step, request, i, kind)))
            except Exception as exc:  # shown in the pane: the thread has nobody else to tell
                later(partial(self._finish_error, exc))
                return
            later(partial(self._finish, request, result, time.perf_counter() - start))

        threading.Thread(target=work, name="lse-failures-search", daemon=True).start()

    def _begin(self, request: _Request) -> None:
        with param.edit_constant(self):
            self.searching = True
        self._search.disabled = True
        self._results.loading = True
        self._progress.param.update(max=len(request.kinds), value=0, visible=True)
        self._step(request, 0, request.kinds[0])

    def _step(self, request: _Request, done: int, kind: str) -> None:
        self._progress.value = done
        self._say(f"Searching {request.target}: latent kind {kind} ({done + 1} of {len(request.kinds)})…")

    def _end(self) -> None:
        with param.edit_constant(self):
            self.searching = False
        self._search.disabled = False
        self._results.loading = False
        self._progress.visible = False

    def _finish(self, request: _Request, result: pd.DataFrame, elapsed: float) -> None:
        try:
            self._show(request, result, elapsed)
        finally:
            self._end()

    def _finish_error(self, exc: Exception) -> None:
        try:
            self._show_error(exc)
        finally:
            self._end()

    def _show_error(self, exc: Exception) -> None:
        self._say(f"The search failed: {exc}", error=True)

    # -- showing -----------------------------------------------------------------------------
    def _show(self, request: _Request, result: pd.DataFrame, elapsed: float) -> None:
        self._unchoose()
        with param.edit_constant(self):
            self.slices = result
        display = format_slice_table(result)
        self._table.param.update(value=display, formatters=_formatters(list(display.columns)), selection=[])
        tried = result.attrs.get("tried", {})
        counts = ", ".join(f"{kind} {sum(t.values()):,}" for kind, t in tried.items())
        fdr = dict(request.options)["fdr"]
        if result.empty:
            self._say(
                f"No slice where {request.target} is predicted significantly worse than in the rest of the cohort "
                f"at FDR {fdr:g} (slices tried: {counts}; {elapsed:.1f} s)."
            )
        else:
            self._say(
                f"{request.target}: {len(result)} slice(s) significant at FDR {fdr:g}, best first per latent kind "
                f"({_metric_note(result)}); slices tried: {counts}; {elapsed:.1f} s."
            )

    def _say(self, text: str, *, error: bool = False) -> None:
        with param.edit_constant(self):
            self.message = text
        self._status.object = _plain_html(text, error=error)

    # -- choosing a slice ------------------------------------------------------------------
    def choose(self, index: int) -> np.ndarray:
        """Select slice ``index`` (a row of :attr:`slices`) in every view; returns its members' rows.

        Phenotype filters are cleared and the region becomes the slice's members, recorded with the
        slice's rule step (:func:`~lse_panel.cohort.slices.slice_rule`), so saving the selection
        keeps a rule that re-applies to the same subjects. A region slice is outlined on its map.
        """
        if self.slices is None or not 0 <= int(index) < len(self.slices):
            raise IndexError(f"no slice {index!r}: search first, then choose a row of the table.")
        row = self.slices.iloc[int(index)]
        step = slice_rule(row)
        members = self.state.backend.apply_rule([step])
        self._members = members
        with param.edit_constant(self):
            self.param.update(chosen=int(index), outlined=str(row["projection"]) if row["kind"] == "region" else "")
        with param.parameterized.batch_call_watchers(self.state):
            self.state.filters = {}
            self.state.select(members, "new", step=step)
        self._send_outline(row)
        if list(self._table.selection) != [int(index)]:
            self._table.selection = [int(index)]
        self._per_latent.object = format_latent_metrics(row.to_dict(), self.slices.attrs.get("task", "regression"))
        self._name.value = f"{row['latent']} fails on {self.slices.attrs.get('target', 'target')} #{row['rank']}"[:80]
        self._save.disabled = False
        return members

    def _unchoose(self) -> None:
        self._members = None
        with param.edit_constant(self):
            self.param.update(chosen=None, outlined="")
        self._send_outline(None)
        self._per_latent.object = None
        self._save.disabled = True

    def _on_table_selection(self, event: param.parameterized.Event) -> None:
        if event.new and event.new[0] != self.chosen:
            self.choose(event.new[0])

    def _on_selection(self, *_: Any) -> None:
        self.scheduler.schedule("chosen", None, self._sync_chosen)

    def _sync_chosen(self) -> None:
        """A selection made elsewhere (a lasso, a filter) is no longer the chosen slice: let it go."""
        if self._members is not None and not self.state.backend.same(self.state.selection, self._members):
            self._unchoose()
            self._table.selection = []

    # -- region outlines ----------------------------------------------------------------------
    def region_overlay(self, projection_key: str, *, x: str = "x", y: str = "y") -> hv.DynamicMap:
        """A ``DynamicMap`` outlining the chosen region slice when it lies on ``projection_key``, to overlay on that map."""
        pipe = hv.streams.Pipe(data=None)
        self._outline_pipes.setdefault(projection_key, []).append(pipe)
        return hv.DynamicMap(lambda data: create_region_outline(data, x=x, y=y), streams=[pipe])

    def _send_outline(self, row: pd.Series | None) -> None:
        region = row is not None and row["kind"] == "region"
        for key, pipes in self._outline_pipes.items():
            data = {"xs": row["polygon_x"], "ys": row["polygon_y"]} if region and key == row["projection"] else None
            for pipe in pipes:
                if data is not None or pipe.data is not None:
                    pipe.send(data)

    # -- saving ------------------------------------------------------------------------------
    @property
    def subgroups(self) -> SubgroupManager:
        """The subgroup manager slices are saved through (the explorer's, or one made on first use)."""
        if self._subgroups is None:
            self._subgroups = SubgroupManager(self.state)
        return self._subgroups

    def save(self, name: str, colour: str | None = None) -> Subgroup:
        """Save the chosen slice, which is the selection, as subgroup ``name`` with its rule.

        Raises
        ------
        SubgroupError
            No slice chosen (none was clicked, or the selection has changed since), or a reserved,
            taken or malformed name (validated as every subgroup name is).
        """
        self._sync_chosen()  # (a hidden pane may not have heard of the latest selection yet)
        if self.chosen is None:
            raise SubgroupError("no slice is chosen: search, then click a slice in the table before saving it.")
        return self.subgroups.save_selection(name, colour)

    def _on_save(self, _: Any) -> None:
        try:
            group = self.save(self._name.value)
        except _USER_ERRORS as exc:
            self._save_status.object = _plain_html(str(exc), error=True)
            return
        self._save_status.object = _plain_html(
            f"Saved {group.name!r} ({self.state.policy.count_text(group.n, self.state.cohort.n_subjects)} subjects) "
            "with its rule."
        )


def _empty_slices() -> pd.DataFrame:
    """An empty table of slices (before the first search)."""
    columns = ["latent", "rank", "rule", "kind", "n", "gap", "gap_ci_low", "gap_ci_high", "q_value", "n_tried"]
    return pd.DataFrame({c: [] for c in columns})


def _formatters(columns: list[str]) -> dict[str, Any]:
    """Plain text for every text column (rules and names are bundle data), three decimals for metrics."""
    out: dict[str, Any] = {}
    for column in columns:
        if column in TEXT_COLUMNS:
            out[column] = {"type": "plaintext"}
        elif column not in ("#", "n", "tried"):
            out[column] = NumberFormatter(format="0.000")
    return out


def _metric_note(result: pd.DataFrame) -> str:
    metric = primary_metric(result.attrs.get("task", "regression"))
    return f"{METRIC_LABELS.get(metric, metric)}: {'lower' if metric == 'mae' else 'higher'} is better"


def _plain_html(text: str, *, error: bool = False) -> str:
    """``text`` as an escaped line of HTML (it may hold phenotype names, which are user data)."""
    colour = "#a61b1b" if error else "#333"
    return f'<div style="color:{colour}">{html.escape(text)}</div>'
