"""The group-comparison pane: the selection and saved subgroups side by side against the comparison group."""

from __future__ import annotations

from typing import Any, Callable, Hashable

import holoviews as hv
import pandas as pd
import panel as pn
import param

from lse_panel.analysis.accuracy import accuracy_by_group, mask_hidden_groups
from lse_panel.analysis.compare import compare_with_reference, distribution_frames
from lse_panel.analysis.groups import COMPARISON, SELECTION, GroupSet
from lse_panel.components.pane import Pane
from lse_panel.components.state import ExplorerState
from lse_panel.components.text import alert, escape_markdown, escaped_options, markdown
from lse_panel.plotting.compare import (
    REFERENCE_COLOUR,
    SELECTION_COLOUR,
    create_distribution_plot,
    create_effect_plot,
    format_accuracy_table,
    format_comparison_table,
)

REFERENCE_LABELS = {"rest": "rest", "all": "cohort"}
"""How the built-in comparison groups are labelled in tables and legends."""

DEFAULT_PHENOTYPES = 4
"""Histograms drawn by default: the first phenotypes of the cohort (more are one click away)."""


class ComparePane(Pane):
    """How the selection and any saved subgroups differ from the comparison group, side by side.

    Every group (the selection and each subgroup chosen in :attr:`subgroups`) is compared with
    the one comparison group of the session, as every pane defines it (``state.comparison``: the
    subjects not selected, the whole cohort, or a saved subgroup), phenotype by phenotype: means (prevalences for binary
    phenotypes), standardised differences (Cohen's d, Cohen's h, Cramér's V), Welch's t or a
    chi-square statistic, and Benjamini–Hochberg q-values, sorted by ``|effect|``; an
    effect-size bar chart; overlaid normalised histograms (grouped bars for categories) of the
    chosen phenotypes; and the accuracy metrics of every latent kind in every group.

    The session's privacy verdicts (``state.groups``, extended with the chosen subgroups) apply to
    every output: a hidden group is not drawn in the histograms, its table cells read "hidden",
    and the pane says why.

    Parameters
    ----------
    state
        The session's :class:`ExplorerState`; the pane watches its groups, and offers its store's
        saved subgroups.
    **params
        Initial values of the params below.

    Examples
    --------
    >>> from lse_panel.testing import tiny_cohort
    >>> state = ExplorerState(tiny_cohort(300))
    >>> pane = ComparePane(state)
    >>> state.select(np.arange(100))
    >>> sorted(set(pane.table["group"]))
    ['selection']
    """

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
        doc="Last phenotype comparison, long format (analysis.compare.TABLE_COLUMNS); None before there is anything to compare.",
    )
    accuracy = param.DataFrame(
        default=None, allow_None=True, constant=True,
        doc="Last accuracy metrics per group (subgroup_metrics' columns plus 'hidden'); None when not computed.",
    )
    distributions = param.Dict(
        default={}, constant=True,
        doc="Last distribution data: {phenotype: (tidy frame of the drawn groups, {hidden group: reason})}.",
    )

    def __init__(self, state: ExplorerState, **params: Any) -> None:
        super().__init__(state=state, **params)
        self.store = state.store
        names = list(state.cohort.phenotype_specs)
        self.param.phenotypes.objects = names
        if not self.phenotypes:
            self.phenotypes = names[:DEFAULT_PHENOTYPES]
        self._plots: dict[str, tuple[Hashable, hv.streams.Pipe, pn.Column]] = {}
        self._effect_key: Hashable = None
        self._effect_pipe: hv.streams.Pipe | None = None
        self._subgroup_choice = pn.widgets.MultiChoice.from_param(
            self.param.subgroups, label="Saved subgroups", placeholder="add subgroups to compare", width=320,
        )
        self._phenotype_choice = pn.widgets.MultiChoice.from_param(
            self.param.phenotypes, label="Histograms of", width=360,
        )
        self._phenotype_choice.options = escaped_options(names)
        self._refresh = pn.widgets.Button(label="↻", width=40, align="end", description="Re-read the saved subgroups")
        self._alert = alert("", alert_type="info", visible=False)
        self._summary = markdown("", margin=(0, 10))
        self._effects = pn.pane.HoloViews(None, sizing_mode="fixed")
        self._table = pn.pane.DataFrame(None, escape=True, sizing_mode="stretch_width", max_rows=200)
        # A Row that wraps, not a pn.FlexBox. BokehJS lays nested containers out top-down through
        # their own layouts, and reaches a container without one only from the root, the root's
        # children or another such container (LayoutDOMView._propagate_layout, bokeh 3.9). Panel's
        # FlexBox (a ReactiveHTML) has none and sits deeper (Explorer tabs > pane > results), so
        # the plots in it were never laid out: served, their frames measured 0×0 px in 340×240 px
        # elements and only stray axis labels were drawn (tests/ui/test_pane_plots_ui.py).
        self._histograms = pn.Row(sizing_mode="stretch_width", styles={"flex-wrap": "wrap"})
        self._accuracy = pn.pane.DataFrame(None, escape=True, sizing_mode="stretch_width", max_rows=500)
        self._accuracy_area = pn.Column(markdown("#### Accuracy per group"), self._accuracy,
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
        state.param.watch(self._on_groups_change, ["groups"])
        # The subgroup manager re-offers the comparison options after every change to the store.
        state.param.watch(self._on_store_change, ["comparison"], what="objects")
        self.param.watch(self._on_groups_change, ["subgroups", "show_accuracy"])
        self.param.watch(self._on_distributions_change, ["phenotypes", "bins"])
        self.refresh_subgroups()
        self._update()

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
        self._subgroup_choice.options = escaped_options(names)
        if kept != list(self.subgroups):
            self.subgroups = kept
        return names

    # -- groups ----------------------------------------------------------------------------
    def _reference(self) -> tuple[str, str | None]:
        """Label and colour (``None``: the default grey) of the comparison group."""
        comparison = self.state.groups.comparison
        if comparison in REFERENCE_LABELS:
            return REFERENCE_LABELS[comparison], None
        group = self.store.get(comparison)
        return group.name, group.colour

    def _saved(self, reference: str) -> dict[str, tuple[str, str]]:
        """The chosen saved subgroups compared beside the selection: ``{label: (name, colour)}``."""
        # Only the chosen ones are opened: a bundle may keep thousands (each open maps two files).
        saved = set(self.store.names())
        out: dict[str, tuple[str, str]] = {}
        for name in self.subgroups:
            if name not in saved or name == reference:
                continue
            label = name if name not in (SELECTION, COMPARISON, *REFERENCE_LABELS.values()) else f"{name} (saved)"
            out[label] = (name, self.store.get(name).colour)
        return out

    # -- scheduling ------------------------------------------------------------------------
    def _recompute(self, name: str, work: Callable[[], None]) -> None:
        self._schedule(name, self._results, work)

    def _on_groups_change(self, *events: param.parameterized.Event) -> None:
        self._recompute("update", self._update)

    def _on_distributions_change(self, *events: param.parameterized.Event) -> None:
        self._recompute("update", self._update)

    def _on_store_change(self, *events: param.parameterized.Event) -> None:
        before = list(self.subgroups)
        self.refresh_subgroups()
        if list(self.subgroups) == before:  # else the subgroups watcher has already updated
            self._recompute("update", self._update)

    def _on_refresh(self, _: Any) -> None:
        self.state.refresh_subgroups()  # another session may have saved one
        self._on_store_change()

    # -- computing -------------------------------------------------------------------------
    def _update(self) -> None:
        state = self.state
        reference, reference_colour = self._reference()
        saved = self._saved(reference)
        # The session's groups with the chosen subgroups added: one set of verdicts for all of them.
        groups = state.groups.including({label: state.backend.subgroup(self.store, name) for label, (name, _) in saved.items()})
        colours = {label: colour for label, (_, colour) in saved.items()}
        compared = [label for label in saved]
        if groups.size(SELECTION):
            compared.insert(0, SELECTION)
            colours[SELECTION] = SELECTION_COLOUR
        colours[reference] = reference_colour or REFERENCE_COLOUR
        if not compared:
            message = (
                "No subjects selected and no saved subgroup chosen. Draw a box or lasso on a latent view, "
                "or add saved subgroups above, to compare them with the comparison group."
            )
            self._set(groups={}, reference=reference, hidden={}, table=None, accuracy=None, distributions={},
                      message=message)  # fmt: skip
            self._alert.param.update(object=escape_markdown(message), alert_type="info", visible=True)
            self._summary.object = ""
            self._results.visible = False
            return
        # One reference for every group: the comparison group as every other pane defines it (for
        # "rest", the subjects not selected), so the columns of the table are comparable.
        shown_as = {COMPARISON: reference, **{label: label for label in compared}}
        sizes = {shown_as[label]: groups.size(label) for label in (COMPARISON, *compared)}
        hidden = {shown_as[label]: reason for label, reason in groups.hidden.items() if label in shown_as}
        if groups.comparison == "rest" and (SELECTION in groups.hidden or COMPARISON in groups.hidden):
            # The rest is the cohort minus the selection, and the cohort's figures are shown
            # elsewhere: any figure of the rest next to them reveals the small group's.
            message = "Hidden by the privacy floor: " + "; ".join(
                groups.hidden[label] for label in (SELECTION, COMPARISON) if label in groups.hidden
            ) + ". Compare with the whole cohort or a saved subgroup instead."
            self._set(groups=sizes, reference=reference, hidden=hidden, table=None, accuracy=None, distributions={},
                      message=message)  # fmt: skip
            self._alert.param.update(object=escape_markdown(message), alert_type="warning", visible=True)
            self._summary.object = ""
            self._results.visible = False
            return
        self._compute(groups, compared, reference, hidden)
        message = ""
        if hidden:
            message = "Hidden by the privacy floor: " + "; ".join(hidden.values()) + "."
        if groups.comparison == "rest" and sizes[reference] == 0:
            message = (
                "The comparison group is empty: every subject is selected. Compare with the whole cohort or "
                "a saved subgroup instead, or select fewer subjects. " + message
            ).strip()
        self._set(groups=sizes, reference=reference, hidden=hidden, message=message)
        self._render(colours)

    def _compute(self, groups: GroupSet, compared: list[str], reference: str, hidden: dict[str, str]) -> None:
        """The table, accuracy and distributions of ``compared`` against the comparison group, hidden ones masked."""
        state, policy = self.state, self.state.policy
        cohort, backend = state.cohort, state.backend
        shown_as = {COMPARISON: reference, **{label: label for label in compared}}
        # Every sum is the group's own (the rest's is the cohort's minus the selection's), cached
        # in the session's groups: a new histogram or subgroup adds only its own pass. On a
        # cluster the backend's sources sum per partition on the workers.
        source = backend.phenotype_sums()
        statistics = {label: groups.sum_over(label, "phenotypes", source.total, source.rows_sum) for label in shown_as}
        table = compare_with_reference(
            {label: statistics[label] for label in compared}, statistics[COMPARISON], cohort.phenotype_specs,
            reference_label=reference, policy=policy,
        )  # fmt: skip
        masked = hidden if reference not in hidden else {label: hidden[reference] for label in compared}
        table = _mask_rows(table, masked, policy, ["n_a", "n_b"])
        accuracy = None
        if self.show_accuracy and groups.metric_sums is not None:
            accuracy = accuracy_by_group(groups, shown_as, policy=policy)
            accuracy = _mask_rows(accuracy, hidden, policy, ["n"])
        distributions = {}
        for name in self.phenotypes:
            binning = backend.binning(name, self.bins)
            counts = {
                shown: groups.sum_over(label, ("bins", name, binning.n_bins), lambda b=binning: b.cohort_counts,
                                       binning.counts)  # fmt: skip
                for label, shown in shown_as.items() if shown not in hidden
            }
            frame, too_few = distribution_frames(binning, counts, policy=policy)
            distributions[name] = (frame, {**hidden, **too_few})
        self._set(table=table, accuracy=accuracy, distributions=distributions)

    # -- rendering -------------------------------------------------------------------------
    def _render(self, colours: dict[str, str]) -> None:
        reference, hidden_text = self.reference, f"hidden (n < {self.state.policy.min_group_size})"
        self._alert.param.update(object=escape_markdown(self.message), alert_type="warning", visible=bool(self.message))
        self._summary.object = " · ".join(
            f"**{escape_markdown(label)}** ({'comparison' if label == reference else 'group'}): "
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
        for name, (frame, hidden) in self.distributions.items():
            spec = specs[name]
            key = (spec.type, tuple(dict.fromkeys(frame["group"])), tuple(sorted(colours.items())))
            known = self._plots.get(name)
            if known is not None and known[0] == key:
                known[1].send(frame)
                note = known[2][1]
            else:
                pipe = hv.streams.Pipe(data=frame)
                plot = pn.pane.HoloViews(
                    hv.DynamicMap(
                        lambda data, spec=spec: create_distribution_plot(
                            data, kind=spec.type, phenotype=spec.name, units=spec.units, colours=colours
                        ),
                        streams=[pipe],
                    ),
                    # Not linked: every histogram's y axis is "density", in its own phenotype's units
                    # (per year, per kg); Panel would give them one range and flatten the narrow ones.
                    sizing_mode="fixed", linked_axes=False,
                )
                note = pn.pane.Str("", styles={"color": "#a33"})
                self._plots[name] = (key, pipe, pn.Column(plot, note))
            note.param.update(object="\n".join(hidden.values()), visible=bool(hidden))
        for name in [n for n in self._plots if n not in self.distributions]:
            del self._plots[name]
        cards = [self._plots[name][2] for name in self.distributions]
        # The same cards as before: leave the layout alone (replacing it rebuilds every plot's models).
        if [id(c) for c in cards] != [id(c) for c in self._histograms.objects]:
            self._histograms.objects = cards


def _mask_rows(table: pd.DataFrame, hidden: dict[str, str], policy: Any, n_cols: list[str]) -> pd.DataFrame:
    """``table`` with the rows of ``hidden`` groups masked and flagged (its ``hidden`` column), reasons kept."""
    if table.empty or not hidden:
        return table
    flagged = table["hidden"].to_numpy() | table["group"].isin(list(hidden)).to_numpy()
    out = mask_hidden_groups(table, hidden, policy, n_cols=n_cols)
    out["hidden"] = flagged
    return out
