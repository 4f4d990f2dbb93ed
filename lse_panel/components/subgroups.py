"""The subgroup manager: save the selection or a condition as a named subgroup, list, edit, show, compare, export."""

from __future__ import annotations

import io
import re
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param

from lse_panel.analysis.conditions import EXAMPLE, ConditionError
from lse_panel.analysis.groups import BUILTIN_COMPARISONS
from lse_panel.analysis.privacy import PrivacyError
from lse_panel.cohort.rules import FilterStep, IdsStep, Step, SubgroupError
from lse_panel.cohort.subgroups import Subgroup, SubgroupStore
from lse_panel.components.scheduling import served
from lse_panel.components.state import ExplorerState
from lse_panel.components.text import alert, escape_html, escape_markdown, markdown
from lse_panel.palette import SUBGROUP_COLOURS, next_free_colour

EXPORT_FORMATS = {"csv": ".csv", "parquet": ".parquet"}

PAGE_SIZE = 10
"""Subgroups listed per page: a row is about ten widgets, so a new session costs the same with 10,000 saved."""

# What the manager catches and shows inline instead of raising into the page.
_USER_ERRORS = (SubgroupError, ConditionError, PrivacyError)


def selection_rule(state: ExplorerState) -> list[Step]:
    """The steps that reproduce the state's current selection, for saving with it.

    A state that records its own selection history (a ``rule`` or ``steps`` attribute holding
    box/lasso/filter/id steps) is used as it is. Otherwise the state only knows its region (rows
    chosen by geometry or id) and its phenotype filters, so the rule is the region's subject ids
    (an :class:`IdsStep`) intersected with the filters (a :class:`FilterStep` of ranges): it
    re-applies exactly on this bundle and by id on a rebuilt one, but does not keep the lasso's
    geometry.

    Parameters
    ----------
    state
        The session state.

    Returns
    -------
    list
        Rule steps; empty when nothing is selected.
    """
    for attribute in ("rule", "steps"):
        recorded = getattr(state, attribute, None)
        if recorded:
            return list(recorded)
    cohort = state.cohort
    backend = getattr(state, "backend", None)

    def ids(members: Any) -> np.ndarray:
        return backend.ids_at(backend.rows(members)) if backend is not None else np.asarray(cohort.ids)[members]

    # The same no-op rule filter_mask skips: every category kept.
    ranges = {
        name: tuple(rule)
        for name, rule in state.filters.items()
        if cohort.phenotype_specs[name].type == "continuous"
        or len(set(int(c) for c in rule)) < len(cohort.phenotype_specs[name].categories)
    }
    steps: list[Step] = []
    if state.region is not None:
        recorded = state.region_rule() if hasattr(state, "region_rule") else []
        steps.extend(recorded or [IdsStep(ids(state.region))])
    if ranges:
        steps.append(FilterStep(ranges=ranges, mode="intersect" if steps else "new"))
    if not steps and state.n_selected:
        steps.append(IdsStep(ids(state.selection)))
    return steps


@dataclass
class _Row:
    """The widgets of one listed subgroup."""

    name: str
    swatch: pn.pane.HTML
    rename: pn.widgets.TextInput
    size: pn.pane.Str
    colour: pn.widgets.ColorPicker
    show: pn.widgets.Checkbox
    select: pn.widgets.Button
    compare: pn.widgets.Button
    delete: pn.widgets.Button
    download: pn.widgets.FileDownload | None

    def layout(self) -> pn.Row:
        items = [self.swatch, self.rename, self.size, self.colour, self.show, self.select, self.compare]
        items += [self.download] if self.download is not None else []
        return pn.Row(*items, self.delete, align="center", margin=(0, 0))


class SubgroupManager(pn.viewable.Viewer):
    """Saved subgroups of the cohort: save the selection or a condition, list, rename, recolour, delete.

    Each listed subgroup can be loaded as the selection, overlaid on the latent views (its name
    joins :attr:`shown`; the latent views draw :meth:`shown_members` in the subgroups' colours),
    made the comparison group of every pane (its name joins the state's ``comparison`` options
    and the state's groups follow it), and exported as CSV or Parquet (ids and
    phenotypes; an individual-level view, so off when the privacy policy switches those off).

    Errors (a taken name, a condition that does not parse) are shown in the pane, with the
    condition's position marked, never raised into the page. The same operations are methods
    for notebooks (:meth:`save_selection`, :meth:`save_condition`, ...), which do raise.

    Parameters
    ----------
    state
        The session state: the selection saved, the comparison group offered, its store (where
        subgroups are saved) and its privacy policy (with individual views off, no id export).
    **params
        Initial values of the params below.

    Examples
    --------
    >>> from lse_panel.testing import tiny_cohort
    >>> state = ExplorerState(tiny_cohort(200))
    >>> manager = SubgroupManager(state)
    >>> state.select(np.arange(50))
    >>> manager.save_selection("first fifty").n
    50
    """

    state = param.ClassSelector(class_=ExplorerState, constant=True, doc="The session state this pane edits.")
    shown = param.List(
        default=[], item_type=str,
        doc="Subgroups overlaid on the latent views, in their colours (see shown_members).",
    )
    names = param.List(
        default=[], item_type=str, constant=True, doc="Names of the saved subgroups, oldest first, as last read.",
    )
    export_format = param.Selector(
        default="csv", objects=list(EXPORT_FORMATS), doc="File format of the subgroup downloads: csv or parquet.",
    )
    message = param.String(default="", constant=True, doc="Last outcome shown to the user: what was done, or why not.")
    page = param.Integer(default=0, bounds=(0, None), doc="Page of the list shown (PAGE_SIZE subgroups each), from 0.")
    find = param.String(default="", doc="Only subgroups whose name holds this text (any case) are listed.")

    def __init__(self, state: ExplorerState, **params: Any) -> None:
        super().__init__(state=state, **params)
        self.store: SubgroupStore = state.store
        self.policy = state.policy
        # The logged-in user (a server with --basic-auth or OAuth) owns what they save.
        self.user: str | None = (pn.state.user or None) if served() else None
        self._rows: dict[str, _Row] = {}
        self._summaries: list[dict[str, Any]] = []
        self._warning = alert("", alert_type="warning", visible=False)
        self._find = pn.widgets.TextInput.from_param(self.param.find, name="", placeholder="find a subgroup", width=200)
        self._previous = pn.widgets.Button(label="◀", width=40, description="Previous page")
        self._next = pn.widgets.Button(label="▶", width=40, description="Next page")
        self._page_text = pn.pane.Str("", margin=(10, 4))
        self._name = pn.widgets.TextInput(label="Subgroup name", placeholder="e.g. high LV mass", width=200)
        self._colour = pn.widgets.ColorPicker(label="Colour", value=SUBGROUP_COLOURS[0], width=60)
        self._save = pn.widgets.Button(label="Save selection", color="primary", width=130, align="end")
        self._condition = pn.widgets.TextInput(
            label="New subgroup from condition", placeholder=EXAMPLE, width=340,
        )
        self._save_condition = pn.widgets.Button(label="Save from condition", color="primary", width=150,
                                                 align="end")  # fmt: skip
        self._condition_feedback = pn.pane.Str("", styles={"color": "#555"}, margin=(0, 10))
        self._status = alert("", alert_type="info", visible=False)
        self._format = pn.widgets.RadioButtonGroup.from_param(self.param.export_format, color="light", width=160)
        self._refresh = pn.widgets.Button(label="↻", width=40, description="Re-read the saved subgroups")
        self._list = pn.Column(sizing_mode="stretch_width")
        export_note = self.policy.check_individual("Export of subgroup ids")
        self._export_note = markdown(export_note or "", visible=bool(export_note))
        self._layout = pn.Column(
            self._warning,
            pn.Row(self._name, self._colour, self._save),
            pn.Row(self._condition, self._save_condition),
            self._condition_feedback,
            self._status,
            pn.Row(markdown("**Saved subgroups**", margin=(8, 10, 0, 10)), self._refresh,
                   *([] if export_note else [markdown("export as", margin=(8, 4, 0, 10)), self._format])),
            self._export_note,
            pn.Row(self._find, self._previous, self._page_text, self._next),
            self._list,
            sizing_mode="stretch_width",
        )  # fmt: skip
        self._save.on_click(self._on_save)
        self._save_condition.on_click(self._on_save_condition)
        self._condition.param.watch(self._on_condition_change, "value")
        self._refresh.on_click(self._on_refresh)
        self._previous.on_click(lambda _: self._turn(-1))
        self._next.on_click(lambda _: self._turn(+1))
        self.param.watch(lambda _: self._show_page(), ["page", "find"])
        self.param.watch(self._on_format_change, "export_format")
        state.param.watch(self._on_comparison_change, "comparison")
        self.refresh()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # -- Python API ------------------------------------------------------------------------
    @property
    def subgroups(self) -> pd.DataFrame:
        """The saved subgroups: name, colour, n, created, steps (one row each, oldest first)."""
        return pd.DataFrame(self.store.summaries(), columns=["name", "colour", "n", "created", "steps", "owner"])

    def save_selection(self, name: str, colour: str | None = None, *, overwrite: bool = False) -> Subgroup:
        """Save the current selection as subgroup ``name``, with the rule that made it (see :func:`selection_rule`).

        Raises
        ------
        SubgroupError
            Nothing selected, a reserved or taken name, a malformed colour.
        """
        self._check_name(name)
        if self.state.n_selected == 0:
            raise SubgroupError("nothing is selected: draw a box or lasso, or set filters, then save.")
        rows = self.state.backend.rows(self.state.selection)  # on a cluster: gathered for this explicit save only
        group = self.store.save(name, rows, selection_rule(self.state), colour, overwrite=overwrite, owner=self.user)
        self.refresh()
        return group

    def save_condition(self, name: str, text: str, colour: str | None = None, *, overwrite: bool = False) -> Subgroup:
        """Save the subjects matching a condition (e.g. ``'age >= 60 and sex == "female"'``) as ``name``.

        Raises
        ------
        ConditionError
            Where and why the condition does not parse or fit the phenotypes (nothing is executed).
        SubgroupError
            A reserved or taken name, a malformed colour.
        """
        self._check_name(name)
        backend = self.state.backend
        group = self.store.save_condition(name, text, colour=colour, overwrite=overwrite, owner=self.user,
                                          rows_of=lambda steps: backend.rows(backend.apply_rule(steps)))
        self.refresh()
        return group

    def rename(self, old: str, new: str) -> Subgroup:
        """Rename subgroup ``old`` to ``new``; the comparison and :attr:`shown` follow the new name."""
        self._check_name(new)
        group = self.store.rename(old, new, user=self.user)
        renamed = [group.name if n.casefold() == old.strip().casefold() else n for n in self.shown]
        was_comparison = self.state.comparison == old
        self.refresh()
        self.shown = renamed
        if was_comparison:
            self.state.comparison = group.name
        return group

    def recolour(self, name: str, colour: str) -> Subgroup:
        """Give subgroup ``name`` the colour ``colour`` (``#rrggbb``)."""
        group = self.store.recolour(name, colour, user=self.user)
        self.refresh()
        return group

    def delete(self, name: str) -> None:
        """Delete subgroup ``name``; a comparison with it falls back to the rest of the cohort."""
        self.store.delete(name, user=self.user)
        self.refresh()

    def select(self, name: str) -> np.ndarray:
        """Make subgroup ``name``'s members the selection (phenotype filters are cleared); returns them."""
        members = self.state.backend.subgroup(self.store, name)
        self.state.param.update(region=members, filters={})
        return self.state.selection

    def use_as_comparison(self, name: str) -> str:
        """Make subgroup ``name`` the comparison group of every pane; returns its name as saved."""
        group = self.store.get(name)
        if group.name not in self.state.param.comparison.objects:
            self.refresh()
        self.state.comparison = group.name
        return group.name

    def shown_members(self) -> dict[str, tuple[str, np.ndarray]]:
        """``{name: (colour, row indices)}`` of the subgroups in :attr:`shown`, for the latent views' overlay."""
        out = {}
        saved = set(self.store.names())
        for name in self.shown:
            if name in saved:
                out[name] = (self.store.get(name).colour, self.state.backend.subgroup(self.store, name))
        return out

    def export_bytes(self, name: str, fmt: str | None = None) -> bytes:
        """Subgroup ``name``'s ids and phenotypes as CSV or Parquet bytes (what the download sends).

        Raises
        ------
        PrivacyError
            When the privacy policy switches individual-level views off.
        """
        fmt = fmt or self.export_format
        if fmt not in EXPORT_FORMATS:
            raise SubgroupError(f"export format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}.")
        with tempfile.TemporaryDirectory(prefix="lse-export-") as tmp:
            # Through the store's export, so the policy check and the file layout are the CLI's.
            path = self.store.export(name, Path(tmp) / f"subgroup{EXPORT_FORMATS[fmt]}", policy=self.policy)
            return path.read_bytes()

    def refresh(self) -> list[str]:
        """Re-read the saved subgroups (another session may have changed them) and rebuild the list.

        Also offers them as comparison groups (``state.param.comparison.objects``), drops vanished
        ones from :attr:`shown`, and moves a comparison with a vanished subgroup back to ``"rest"``.
        """
        self.state.refresh_subgroups()
        self._summaries = self.store.summaries()
        names = [summary["name"] for summary in self._summaries]
        with param.edit_constant(self):
            self.names = names
        shown = [n for n in self.shown if n in names]
        if shown != self.shown:
            self.shown = shown
        warning = self.store.warning
        self._warning.param.update(object=escape_markdown(warning or ""), visible=bool(warning))
        self._colour.value = next_free_colour([summary["colour"] for summary in self._summaries])
        self._show_page()
        return names

    def _show_page(self) -> None:
        """List the current page of the subgroups :attr:`find` matches: widgets for those rows only."""
        wanted = self.find.strip().casefold()
        matching = [s for s in self._summaries if wanted in s["name"].casefold()] if wanted else self._summaries
        pages = max(1, -(-len(matching) // PAGE_SIZE))
        if self.page >= pages:
            self.page = pages - 1  # re-enters through the watcher
            return
        listed = matching[self.page * PAGE_SIZE:(self.page + 1) * PAGE_SIZE]
        self._rows = {summary["name"]: self._make_row(summary) for summary in listed}
        empty = "*No saved subgroups yet: select subjects and press Save selection.*" if not self._summaries else (
            "*No saved subgroup matches.*")  # fmt: skip
        self._list.objects = [row.layout() for row in self._rows.values()] or [markdown(empty)]
        self._page_text.object = f"page {self.page + 1} of {pages} ({len(matching):,} subgroups)"
        self._previous.disabled, self._next.disabled = self.page == 0, self.page >= pages - 1

    def _turn(self, step: int) -> None:
        self.page = max(0, self.page + step)

    # -- internals -------------------------------------------------------------------------
    @staticmethod
    def _check_name(name: str) -> None:
        if isinstance(name, str) and name.strip().casefold() in BUILTIN_COMPARISONS:
            raise SubgroupError(
                f"{name.strip()!r} is reserved for a built-in comparison group ({', '.join(BUILTIN_COMPARISONS)}); "
                "choose another name."
            )

    def _count(self, n: int) -> str:
        """A count as the privacy mode lets it show (``<k`` under the floor in aggregate mode)."""
        return self.policy.count_text(n, self.state.cohort.n_subjects)

    def _make_row(self, group: dict[str, Any]) -> _Row:
        name = group["name"]
        download = None
        if self.policy.individual_views:
            download = pn.widgets.FileDownload(
                callback=partial(self._download, name), filename=self._filename(name), label="⬇",
                color="light", width=50, embed=False, description="Download this subgroup's ids and phenotypes",
            )
        row = _Row(
            name=name,
            swatch=pn.pane.HTML(
                f'<div style="width:16px;height:16px;border-radius:3px;background:{escape_html(group["colour"])}"></div>',
                width=20, margin=(12, 4),
            ),
            rename=pn.widgets.TextInput(value=name, width=160),
            size=pn.pane.Str(f"n = {self._count(group['n'])}", width=90, margin=(10, 4)),
            colour=pn.widgets.ColorPicker(value=group["colour"], width=50),
            show=pn.widgets.Checkbox(label="show", value=name in self.shown, width=60, margin=(12, 4)),
            select=pn.widgets.Button(label="select", width=70),
            compare=pn.widgets.Button(
                label="compared" if self.state.comparison == name else "compare with", width=110,
                color="success" if self.state.comparison == name else "default",
            ),
            delete=pn.widgets.Button(label="delete", color="danger", variant="outline", width=70),
            download=download,
        )  # fmt: skip
        row.rename.param.watch(partial(self._on_rename, name), "value")
        row.colour.param.watch(partial(self._on_recolour, name), "value")
        row.show.param.watch(partial(self._on_show, name), "value")
        row.select.on_click(partial(self._on_select, name))
        row.compare.on_click(partial(self._on_compare, name))
        row.delete.on_click(partial(self._on_delete, name))
        return row

    def _filename(self, name: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "subgroup"
        return f"{slug}{EXPORT_FORMATS[self.export_format]}"

    def _download(self, name: str) -> io.BytesIO:
        try:
            return io.BytesIO(self.export_bytes(name))
        except _USER_ERRORS as exc:
            self._report(str(exc), error=True)
            return io.BytesIO(b"")

    def _report(self, text: str, *, error: bool = False) -> None:
        with param.edit_constant(self):
            self.message = text
        self._status.object = escape_markdown(text)
        self._status.alert_type = "danger" if error else "success"
        self._status.visible = bool(text)

    def _attempt(self, done: str, action: Any, *args: Any) -> Any:
        """Run a store change, reporting ``done`` (formatted with the result) or the error inline."""
        try:
            result = action(*args)
        except _USER_ERRORS as exc:
            self._report(str(exc), error=True)
            return None
        self._report(done.format(result=result))
        return result

    # -- watchers ----------------------------------------------------------------------------
    def _on_save(self, _: Any) -> None:
        group = self._attempt("Saved {result.name!r}.", self.save_selection, self._name.value, self._colour.value)
        if group is not None:
            self._report(f"Saved {group.name!r} ({self._count(group.n)} subjects).")
        if group is not None:
            self._name.value = ""

    def _on_save_condition(self, _: Any) -> None:
        text = self._condition.value
        if not text.strip():
            self._report(f"Write a condition first, e.g. {EXAMPLE}.", error=True)
            return
        try:
            group = self.save_condition(self._name.value, text, self._colour.value)
        except ConditionError as exc:
            self._condition_feedback.object = str(exc)
            self._report("The condition does not parse; see the message under it.", error=True)
            return
        except _USER_ERRORS as exc:
            self._report(str(exc), error=True)
            return
        self._condition_feedback.object = ""
        self._name.value = ""
        self._report(f"Saved {group.name!r} ({self._count(group.n)} subjects) from the condition.")

    def _on_condition_change(self, event: param.parameterized.Event) -> None:
        text = event.new
        if not text.strip():
            self._condition_feedback.object = ""
            return
        try:
            step = FilterStep.from_text(text, self.state.cohort)
            n = self.state.backend.size(self.state.backend.apply_rule([step]))
        except ConditionError as exc:
            self._condition_feedback.object = str(exc)
            return
        self._condition_feedback.object = f"✓ {self._count(n)} subjects match"

    def _on_refresh(self, _: Any) -> None:
        self.refresh()

    def _on_format_change(self, _: param.parameterized.Event) -> None:
        for name, row in self._rows.items():
            if row.download is not None:
                row.download.filename = self._filename(name)

    def _on_rename(self, old: str, event: param.parameterized.Event) -> None:
        if event.new.strip() == old:
            return
        if self._attempt(f"Renamed {old!r} to {{result.name!r}}.", self.rename, old, event.new) is None:
            row = self._rows.get(old)
            if row is not None:
                row.rename.value = old

    def _on_recolour(self, name: str, event: param.parameterized.Event) -> None:
        self._attempt(f"Recoloured {name!r}.", self.recolour, name, event.new)

    def _on_show(self, name: str, event: param.parameterized.Event) -> None:
        shown = [n for n in self.shown if n != name]
        self.shown = shown + [name] if event.new else shown

    def _on_select(self, name: str, _: Any) -> None:
        rows = self._attempt(f"Selected the subjects of {name!r}.", self.select, name)
        if rows is not None:
            self._report(f"Selected the {self._count(self.state.backend.size(rows))} subjects of {name!r}.")

    def _on_compare(self, name: str, _: Any) -> None:
        self._attempt(f"Every pane now compares with {name!r}.", self.use_as_comparison, name)

    def _on_comparison_change(self, event: param.parameterized.Event) -> None:
        for name, row in self._rows.items():
            active = name == event.new
            row.compare.param.update(label="compared" if active else "compare with",
                                     color="success" if active else "default")  # fmt: skip

    def _on_delete(self, name: str, _: Any) -> None:
        self._attempt(f"Deleted {name!r}.", self.delete, name)
