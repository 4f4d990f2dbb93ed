"""The group-comparison pane: the selection and saved subgroups side by side against the comparison group."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Hashable, Mapping

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from lse_panel.analysis.compare import COLUMNS as COMPARE_COLUMNS
from lse_panel.analysis.compare import compare_groups
from lse_panel.analysis.metrics import subgroup_metrics
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.subgroups import SubgroupStore
from lse_panel.components.accuracy import prepared_metrics
from lse_panel.components.cache import cohort_cached as shared_cohort_cached
from lse_panel.components.decode import privacy_reasons
from lse_panel.components.scheduling import Scheduler
from lse_panel.components.state import ExplorerState
from lse_panel.plotting.compare import (
    REFERENCE_COLOUR,
    SELECTION_COLOUR,
    bin_index,
    category_frame,
    count_bins,
    create_distribution_plot,
    create_effect_plot,
    format_accuracy_table,
    format_comparison_table,
    histogram_edges,
    histogram_frame,
)

Group = np.ndarray
"""Row indices (sorted int64) or a boolean mask over the cohort."""

SELECTION = "selection"
REFERENCE_LABELS = {"rest": "rest", "all": "cohort"}
"""How the built-in comparison groups are labelled in tables and legends."""

DEFAULT_PHENOTYPES = 4
"""Histograms drawn by default: the first phenotypes of the cohort (more are one click away)."""

TABLE_COLUMNS = ["group", "reference", *COMPARE_COLUMNS, "hidden"]
"""Columns of :attr:`ComparePane.table` (and :func:`compare_with_reference`)."""


_cohort_cached = partial(shared_cohort_cached, namespace="lse_panel.components.compare")


def _size(group: Group | None, n: int) -> int:
    if group is None:
        return n
    g = np.asarray(group)
    return int(g.sum()) if g.dtype == np.bool_ else int(g.size)


def compare_with_reference(
    cohort: Cohort,
    groups: Mapping[str, Group],
    reference: Group | None,
    *,
    reference_label: str = "comparison",
    policy: PrivacyPolicy | None = None,
    phenotypes: list[str] | None = None,
) -> pd.DataFrame:
    """Each group against one reference group on every phenotype, with the privacy floor applied.

    Parameters
    ----------
    cohort
        The cohort whose phenotypes are compared.
    groups
        ``{label: rows or mask}``, e.g. the selection and saved subgroups.
    reference
        Rows or mask of the comparison group; ``None`` means, for each group, everyone outside it
        (:func:`~lse_panel.analysis.compare.compare_groups` with ``group_b=None``).
    reference_label
        Written in the ``reference`` column.
    policy
        Rows where either group has fewer non-missing values than ``policy.min_group_size`` are
        masked (:meth:`PrivacyPolicy.filter_table`) and flagged in ``hidden``.
    phenotypes
        Which phenotypes; default every phenotype of the cohort.

    Returns
    -------
    pandas.DataFrame
        :data:`TABLE_COLUMNS`: for each group, :func:`compare_groups`' rows (sorted by
        ``|effect|``, with BH q-values over that group's phenotypes).
    """
    policy = policy if policy is not None else PrivacyPolicy()
    names = list(cohort.phenotype_specs) if phenotypes is None else list(phenotypes)
    specs = {name: cohort.phenotype_specs[name] for name in names}
    table = {name: cohort.phenotype(name) for name in names}
    parts = []
    for label, rows in groups.items():
        result = compare_groups(table, specs, rows, reference)
        parts.append(result.assign(group=label, reference=reference_label))
    if not parts:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    long = pd.concat(parts, ignore_index=True)
    hidden = np.minimum(long["n_a"].to_numpy(), long["n_b"].to_numpy()) < policy.min_group_size
    long = policy.filter_table(long, ["n_a", "n_b"])
    long["hidden"] = hidden
    return long[TABLE_COLUMNS]


def accuracy_by_group(
    cohort: Cohort, groups: Mapping[str, Group], *, policy: PrivacyPolicy | None = None
) -> pd.DataFrame:
    """Accuracy metrics of every latent kind's predictions in each group, with the privacy floor applied.

    Parameters
    ----------
    cohort
        A cohort with cross-fitted predictions (its prepared metrics are cached per process).
    groups
        ``{label: rows or mask}``, the reference included.
    policy
        Rows computed from fewer subjects than ``policy.min_group_size`` are masked and flagged
        in ``hidden``.

    Returns
    -------
    pandas.DataFrame
        :func:`~lse_panel.analysis.metrics.subgroup_metrics`' long table plus ``hidden``; empty
        when the cohort has no predictions.
    """
    policy = policy if policy is not None else PrivacyPolicy()
    if not cohort.predictions or not groups:
        return pd.DataFrame()
    long = subgroup_metrics(None, None, None, dict(groups), prepared=prepared_metrics(cohort), bootstrap=False)
    hidden = long["n"].to_numpy() < policy.min_group_size
    long = policy.filter_table(long, "n")
    long["hidden"] = hidden
    return long


def distribution_frames(
    cohort: Cohort,
    name: str,
    groups: Mapping[str, Group | None],
    *,
    bins: int = 30,
    policy: PrivacyPolicy | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """One phenotype's distribution in each group (shared bins), leaving out groups below the floor.

    Parameters
    ----------
    cohort
        The cohort.
    name
        A phenotype.
    groups
        ``{label: rows, mask, or None for everyone}``.
    bins
        Histogram bins of a continuous phenotype (edges over the whole cohort's range).
    policy
        A group with fewer non-missing values than ``policy.min_group_size`` is not drawn.

    Returns
    -------
    frame : pandas.DataFrame
        :func:`~lse_panel.plotting.compare.histogram_frame` (continuous) or
        :func:`~lse_panel.plotting.compare.category_frame` output for the drawn groups.
    hidden : dict
        ``{label: reason}`` for the groups left out.
    """
    policy = policy if policy is not None else PrivacyPolicy()
    spec = cohort.phenotype_specs[name]
    if spec.type == "continuous":

        def binned() -> tuple[np.ndarray, np.ndarray]:
            values = cohort.phenotype(name)
            edges = histogram_edges(values, bins)
            return edges, bin_index(values, edges)

        edges, index = _cohort_cached(cohort, ("bins", name, bins), binned)
        n_bins = len(edges) - 1
    else:
        index, n_bins = np.asarray(cohort.phenotype(name)), len(spec.categories)
        if index.dtype.kind == "f":
            index = np.where(np.isfinite(index), index, -1).astype(np.int64)
    counts: dict[str, np.ndarray] = {}
    hidden: dict[str, str] = {}
    for label, rows in groups.items():
        c = count_bins(index, rows, n_bins)
        reason = policy.check(int(c.sum()), label)
        if reason is None:
            counts[label] = c
        else:
            hidden[label] = reason
    if spec.type == "continuous":
        return histogram_frame(counts, edges), hidden
    return category_frame(counts, spec.categories), hidden



class ComparePane(pn.viewable.Viewer):
    """How the selection and any saved subgroups differ from the comparison group, side by side.

    Every group (the selection and each subgroup chosen in :attr:`subgroups`) is compared with
    the one comparison group of the session, as every pane defines it (``state.comparison``: the
    subjects not selected, the whole cohort, or a saved subgroup), phenotype by phenotype: means (prevalences for binary
    phenotypes), standardised differences (Cohen's d, Cohen's h, Cramér's V), Welch's t or a
    chi-square statistic, and Benjamini–Hochberg q-values, sorted by ``|effect|``; an
    effect-size bar chart; overlaid normalised histograms (grouped bars for categories) of the
    chosen phenotypes; and the accuracy metrics of every latent kind in every group.

    The privacy floor (``policy.min_group_size``) applies to every output: a group with fewer
    subjects is not drawn in the histograms, its table cells read "hidden", and the pane says why.

    Parameters
    ----------
    state
        The session's :class:`ExplorerState`; the pane watches its selection and comparison.
    store
        Saved subgroups offered for comparison; default: the cohort's :class:`SubgroupStore`.
    **params
        ``policy`` or initial values of the params below.

    Examples
    --------
    >>> from lse_panel.testing import tiny_cohort
    >>> state = ExplorerState(tiny_cohort(300))
    >>> pane = ComparePane(state)
    >>> state.select(np.arange(100))
    >>> sorted(set(pane.table["group"]))
    ['selection']
    """

    state = param.ClassSelector(class_=ExplorerState, constant=True, doc="The session state this pane renders.")
    store = param.ClassSelector(class_=SubgroupStore, constant=True, doc="Saved subgroups offered for comparison.")
    policy = param.ClassSelector(
        class_=PrivacyPolicy, default=PrivacyPolicy(), constant=True,
        doc="Privacy floor: no group smaller than its min_group_size is shown in any output.",
    )
    subgroups = param.ListSelector(
        default=[], objects=[], doc="Saved subgroups compared with the comparison group, beside the selection.",
    )
    phenotypes = param.ListSelector(default=[], objects=[], doc="Phenotypes whose distributions are drawn.")
    bins = param.Integer(default=30, bounds=(5, 200), doc="Histogram bins of continuous phenotypes.")
    show_accuracy = param.Boolean(default=True, doc="Also compare the accuracy metrics of every latent kind.")
    groups = param.Dict(
        default={}, constant=True, doc="Groups of the last comparison: {label: number of subjects}, reference first.",
    )
    reference = param.String(default="", constant=True, doc="Label of the group everything was compared with.")
    hidden = param.Dict(
        default={}, constant=True, doc="Groups hidden by the privacy floor: {label: reason shown instead}.",
    )
    table = param.DataFrame(
        default=None, allow_None=True, constant=True,
        doc="Last phenotype comparison, long format (TABLE_COLUMNS); None before there is anything to compare.",
    )
    accuracy = param.DataFrame(
        default=None, allow_None=True, constant=True,
        doc="Last accuracy metrics per group (subgroup_metrics' columns plus 'hidden'); None when not computed.",
    )
    distributions = param.Dict(
        default={}, constant=True,
        doc="Last distribution data: {phenotype: (tidy frame of the drawn groups, {hidden group: reason})}.",
    )
    message = param.String(default="", constant=True, doc="What the pane tells the user instead of (or above) results.")

    def __init__(self, state: ExplorerState, store: SubgroupStore | None = None, **params: Any) -> None:
        shared = getattr(state, "store", None)
        if store is None:
            store = shared if isinstance(shared, SubgroupStore) else SubgroupStore(state.cohort)
        super().__init__(state=state, store=store, **params)
        if shared is None:
            state.store = store  # so state.comparison_indices() resolves subgroup names
        names = list(state.cohort.phenotype_specs)
        self.param.phenotypes.objects = names
        if not self.phenotypes:
            self.phenotypes = names[:DEFAULT_PHENOTYPES]
        self.scheduler = Scheduler()
        self._plots: dict[str, tuple[Hashable, hv.streams.Pipe, pn.pane.HoloViews]] = {}
        self._effect_key: Hashable = None
        self._effect_pipe: hv.streams.Pipe | None = None
        self._subgroup_choice = pn.widgets.MultiChoice.from_param(
            self.param.subgroups, label="Saved subgroups", placeholder="add subgroups to compare", width=320,
        )
        self._phenotype_choice = pn.widgets.MultiChoice.from_param(
            self.param.phenotypes, label="Histograms of", width=360,
        )
        self._refresh = pn.widgets.Button(label="↻", width=40, align="end", description="Re-read the saved subgroups")
        self._alert = pn.pane.Alert("", alert_type="info", visible=False)
        self._summary = pn.pane.Markdown("", margin=(0, 10))
        self._effects = pn.pane.HoloViews(None, sizing_mode="fixed")
        self._table = pn.pane.DataFrame(None, escape=True, sizing_mode="stretch_width", max_rows=200)
        self._histograms = pn.FlexBox(sizing_mode="stretch_width")
        self._accuracy = pn.pane.DataFrame(None, escape=True, sizing_mode="stretch_width", max_rows=500)
        self._accuracy_area = pn.Column(pn.pane.Markdown("#### Accuracy per group"), self._accuracy,
                                        sizing_mode="stretch_width")  # fmt: skip
        self._results = pn.Column(
            pn.Row(self._effects, self._table, sizing_mode="stretch_width"),
            self._histograms,
            self._accuracy_area,
            sizing_mode="stretch_width",
        )
        self._layout = pn.Column(
            pn.Row(self._subgroup_choice, self._refresh, self._phenotype_choice),
            self._alert,
            self._summary,
            self._results,
            sizing_mode="stretch_width",
        )
        self._refresh.on_click(self._on_refresh)
        state.param.watch(self._on_groups_change, ["selection", "comparison"])
        # The subgroup manager re-offers the comparison options after every change to the store.
        state.param.watch(self._on_store_change, ["comparison"], what="objects")
        self.param.watch(self._on_groups_change, ["subgroups", "show_accuracy"])
        self.param.watch(self._on_distributions_change, ["phenotypes", "bins"])
        self.refresh_subgroups()
        self._update()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # -- Python API ------------------------------------------------------------------------
    def compare(self, subgroups: list[str] | None = None) -> pd.DataFrame:
        """Compare the selection and ``subgroups`` (default: those chosen) with the comparison group now.

        Returns
        -------
        pandas.DataFrame
            :attr:`table` (long format, privacy floor applied).
        """
        if subgroups is not None:
            self.refresh_subgroups()
            self.subgroups = list(subgroups)  # triggers the update
        else:
            self._update()
        return self.table

    def refresh_subgroups(self) -> list[str]:
        """Re-read the saved subgroups and offer them; chosen ones that vanished are dropped."""
        names = self.store.names()
        kept = [n for n in self.subgroups if n in names]
        self.param.subgroups.objects = names
        self._subgroup_choice.options = names
        if kept != list(self.subgroups):
            self.subgroups = kept
        return names

    # -- groups ----------------------------------------------------------------------------
    def _reference(self) -> tuple[str, Group, str | None]:
        """Label, rows (or mask) and colour (``None``: the default grey) of the comparison group."""
        state = self.state
        if state.comparison == "rest":
            return REFERENCE_LABELS["rest"], self._rest_mask(), None
        if state.comparison == "all":
            return REFERENCE_LABELS["all"], np.ones(state.cohort.n_subjects, dtype=bool), None
        group = self.store.get(state.comparison)
        return group.name, state.comparison_indices(), group.colour

    def _compared(self, reference: str) -> tuple[dict[str, Group], dict[str, str]]:
        """The groups compared with the reference, and their colours."""
        groups: dict[str, Group] = {}
        colours: dict[str, str] = {}
        if self.state.n_selected:
            groups[SELECTION], colours[SELECTION] = self.state.selection, SELECTION_COLOUR
        saved = {g.name: g for g in self.store.list()}
        for name in self.subgroups:
            if name not in saved or name == reference:
                continue
            label = name if name not in (SELECTION, *REFERENCE_LABELS.values()) else f"{name} (saved)"
            groups[label], colours[label] = self.store.members(name), saved[name].colour
        return groups, colours

    # -- scheduling ------------------------------------------------------------------------
    def _schedule(self, name: str, work: Callable[[], None]) -> None:
        """Recompute through the pane's :class:`~lse_panel.components.scheduling.Scheduler`."""
        self.scheduler.schedule(name, self._results, work)

    def _on_groups_change(self, *events: param.parameterized.Event) -> None:
        self._schedule("update", self._update)

    def _on_distributions_change(self, *events: param.parameterized.Event) -> None:
        self._schedule("update", self._update)

    def _on_store_change(self, *events: param.parameterized.Event) -> None:
        before = list(self.subgroups)
        self.refresh_subgroups()
        if list(self.subgroups) == before:  # else the subgroups watcher has already updated
            self._schedule("update", self._update)

    def _on_refresh(self, _: Any) -> None:
        self._on_store_change()

    # -- computing -------------------------------------------------------------------------
    def _set(self, **values: Any) -> None:
        with param.edit_constant(self):
            self.param.update(**values)

    def _update(self) -> None:
        state, policy = self.state, self.policy
        n_total = state.cohort.n_subjects
        reference, reference_rows, reference_colour = self._reference()
        groups, colours = self._compared(reference)
        colours[reference] = reference_colour or REFERENCE_COLOUR
        if not groups:
            message = (
                "No subjects selected and no saved subgroup chosen. Draw a box or lasso on a latent view, "
                "or add saved subgroups above, to compare them with the comparison group."
            )
            self._set(groups={}, reference=reference, hidden={}, table=None, accuracy=None, distributions={},
                      message=message)  # fmt: skip
            self._alert.param.update(object=message, alert_type="info", visible=True)
            self._summary.object = ""
            self._results.visible = False
            return
        # One reference for every group: the comparison group as every other pane defines it (for
        # "rest", the subjects not selected), so the columns of the table are comparable.
        sizes = {reference: _size(reference_rows, n_total)}
        sizes.update({label: _size(rows, n_total) for label, rows in groups.items()})
        hidden = {label: r for label, n in sizes.items() if (r := policy.check(n, label)) is not None}
        leak = privacy_reasons(policy, state.n_selected, sizes[reference], state.comparison)
        if state.comparison == "rest" and leak:
            # The rest is the cohort minus the selection, and the cohort's figures are shown
            # elsewhere: any figure of the rest next to them reveals the small group's.
            message = "Hidden by the privacy floor: " + "; ".join(leak.values()) + (
                ". Compare with the whole cohort or a saved subgroup instead."
            )
            self._set(groups=sizes, reference=reference, hidden={**hidden, reference: leak.get("comparison", "")},
                      table=None, accuracy=None, distributions={}, message=message)  # fmt: skip
            self._alert.param.update(object=message, alert_type="warning", visible=True)
            self._summary.object = ""
            self._results.visible = False
            return
        table = compare_with_reference(state.cohort, groups, reference_rows, reference_label=reference, policy=policy)
        accuracy = None
        if self.show_accuracy and state.cohort.predictions:
            accuracy = accuracy_by_group(state.cohort, {reference: reference_rows, **groups}, policy=policy)
        drawn: dict[str, Group | None] = {reference: reference_rows, **groups}
        distributions = {
            name: distribution_frames(state.cohort, name, drawn, bins=self.bins, policy=policy)
            for name in self.phenotypes
        }
        message = ""
        if hidden:
            message = "Hidden by the privacy floor: " + "; ".join(hidden.values()) + "."
        if reference == REFERENCE_LABELS["rest"] and sizes[reference] == 0:
            message = (
                "The comparison group is empty: every subject is selected. Compare with the whole cohort or "
                "a saved subgroup instead, or select fewer subjects. " + message
            ).strip()
        self._set(groups=sizes, reference=reference, hidden=hidden, table=table, accuracy=accuracy,
                  distributions=distributions, message=message)  # fmt: skip
        self._render(colours)

    def _rest_mask(self) -> np.ndarray:
        rest = np.ones(self.state.cohort.n_subjects, dtype=bool)
        rest[self.state.selection] = False
        return rest

    # -- rendering -------------------------------------------------------------------------
    def _render(self, colours: dict[str, str]) -> None:
        reference, hidden_text = self.reference, f"hidden (n < {self.policy.min_group_size})"
        self._alert.param.update(object=self.message, alert_type="warning", visible=bool(self.message))
        self._summary.object = " · ".join(
            f"**{label}** ({'comparison' if label == reference else 'group'}): "
            + (f"{n:,} subjects" if label not in self.hidden else f"{hidden_text}")
            for label, n in self.groups.items()
        )
        self._results.visible = True
        self._table.object = format_comparison_table(self.table, reference=reference, hidden_text=hidden_text)
        effect_data = self.table[~self.table["hidden"]]
        key = tuple(dict.fromkeys(effect_data["group"])), tuple(sorted(colours.items())), reference
        if self._effect_pipe is None or key != self._effect_key:
            # Built once per set of groups; later tables only replace the data of the same plot.
            self._effect_key, self._effect_pipe = key, hv.streams.Pipe(data=effect_data)
            self._effects.object = hv.DynamicMap(
                lambda data: create_effect_plot(data, colours=colours, reference=reference), streams=[self._effect_pipe]
            )
        else:
            self._effect_pipe.send(effect_data)
        self._render_histograms(colours)
        if self.accuracy is None or self.accuracy.empty:
            self._accuracy_area.visible = False
        else:
            self._accuracy_area.visible = True
            self._accuracy.object = format_accuracy_table(
                self.accuracy, groups=list(self.groups), reference=reference, hidden=self.accuracy["hidden"],
                hidden_text=hidden_text,
            )

    def _render_histograms(self, colours: dict[str, str]) -> None:
        specs = self.state.cohort.phenotype_specs
        cards = []
        for name, (frame, hidden) in self.distributions.items():
            spec = specs[name]
            key = (spec.type, tuple(dict.fromkeys(frame["group"])), tuple(sorted(colours.items())))
            known = self._plots.get(name)
            if known is not None and known[0] == key:
                known[1].send(frame)
                plot = known[2]
            else:
                pipe = hv.streams.Pipe(data=frame)
                plot = pn.pane.HoloViews(
                    hv.DynamicMap(
                        lambda data, spec=spec: create_distribution_plot(
                            data, kind=spec.type, phenotype=spec.name, units=spec.units, colours=colours
                        ),
                        streams=[pipe],
                    ),
                    sizing_mode="fixed",
                )
                self._plots[name] = (key, pipe, plot)
            note = pn.pane.Str("\n".join(hidden.values()), visible=bool(hidden), styles={"color": "#a33"})
            cards.append(pn.Column(plot, note))
        for name in [n for n in self._plots if n not in self.distributions]:
            del self._plots[name]
        self._histograms.objects = cards
