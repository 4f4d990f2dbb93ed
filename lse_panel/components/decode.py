"""The decode pane: what the model decodes for the selection, its comparison group and a few subjects."""

from __future__ import annotations

from functools import partial
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param

from lse_panel.analysis.decode import Decoder, decode_means, decode_subjects
from lse_panel.analysis.groups import COMPARISON, SELECTION
from lse_panel.cohort.schema import Modality
from lse_panel.components.modality_cards import ModalityCards
from lse_panel.components.pane import Pane
from lse_panel.components.state import ExplorerState
from lse_panel.components.text import alert, escape_markdown, markdown
from lse_panel.config import SETTINGS
from lse_panel.plotting.signals import create_modality_plot
from lse_panel.sources import RawSource

MAX_SAMPLES = SETTINGS.max_selection_sample
"""Most subjects shown as original vs reconstruction: individual records are heavy and sensitive."""

MEAN_GROUPS = (SELECTION, COMPARISON)
SUBJECT_GROUPS = ("original", "reconstruction")


class DecodePane(Pane):
    """Decoded means of the selection and its comparison group, and a few subjects' reconstructions.

    Every modality the decoder returns is drawn by its kind: signals as per-channel curves with
    the two groups overlaid, image sequences as the two cines side by side under one frame
    player, with their difference. Plots are built once; a new selection only sends new data
    (means and at most ``n_samples`` subjects, never the selection itself).

    Parameters
    ----------
    state
        The session's :class:`ExplorerState`; the pane watches its groups and ``decode_from``,
        and hides what its privacy policy hides.
    decode
        Latents ``(k, d)`` float32 → ``{modality: (k, *shape)}``, e.g. a wrapped torch decoder.
    raw_source
        Reads or regenerates the subjects' original records (:func:`lse_panel.sources.open_raw_source`);
        without one, subjects show reconstructions only.
    """

    n_samples = param.Integer(
        default=MAX_SAMPLES, bounds=(0, MAX_SAMPLES),
        doc="Subjects of the selection shown as original vs reconstruction (a capped, reproducible sample).",
    )
    show_subjects = param.Boolean(
        default=True,
        doc="Show individual subjects (raw records and reconstructions); switch off where access "
        "agreements forbid individual-level views.",
    )
    decoded = param.Dict(
        default={}, constant=True,
        doc="Last decoded group means: {'selection'|'comparison': {modality: array}}; empty and hidden groups absent.",
    )
    hidden = param.Dict(
        default={}, constant=True, doc="Groups hidden by the privacy floor: {'selection'|'comparison': reason}.",
    )
    sample_rows = param.Array(
        default=np.empty(0, dtype=np.int64), constant=True,
        doc="Row indices of the subjects shown individually (empty while their card is closed).",
    )

    def __init__(
        self, state: ExplorerState, decode: Decoder, *, raw_source: RawSource | None = None, **params: Any
    ) -> None:
        if not state.policy.individual_views:
            params.setdefault("show_subjects", False)
        super().__init__(state=state, **params)
        self._decode = decode
        self._raw_source = raw_source
        self._cards = ModalityCards(
            state.cohort.modalities, MEAN_GROUPS, lambda name, spec: f"{name} ({spec.kind}): mean of each group"
        )
        self._sample_specs: dict[str, Modality] = {}
        self._sample_pipes: list[dict[str, hv.streams.Pipe]] = []

        self._decode_from = pn.widgets.RadioButtonGroup.from_param(
            state.param.decode_from, name="Decode from", button_type="primary", button_style="outline"
        )
        self._header = markdown("", margin=(0, 10))
        self._alert = alert("", alert_type="info", visible=False)
        self._means = self._cards.layout
        self._sample_note = markdown("", visible=False)
        self._sample_rows = pn.Column()
        # Collapsed until opened: individual subjects are computed and drawn only while the card is
        # open, which keeps them off the path from a lasso to the group means (~100 ms at 4 subjects).
        self._samples = pn.Card(
            self._sample_note, self._sample_rows, title=f"Subjects: original vs reconstruction (≤ {MAX_SAMPLES})",
            collapsed=True, sizing_mode="stretch_width",
        )
        self._layout = pn.Column(
            pn.Row(self._decode_from, self._header),
            self._alert,
            self._means,
            self._samples,
            sizing_mode="stretch_width",
        )
        state.param.watch(self._on_groups_change, ["groups", "decode_from"])
        state.param.watch(self._on_sample_change, ["groups", "decode_from"])
        self.param.watch(self._on_sample_change, ["n_samples", "show_subjects"])
        self._samples.param.watch(self._on_sample_change, ["collapsed"])
        self._update_means()
        self._update_samples()

    # -- scheduling ------------------------------------------------------------------------
    def _on_groups_change(self, *events: param.parameterized.Event) -> None:
        self._schedule("means", self._means, self._update_means)

    def _on_sample_change(self, *events: param.parameterized.Event) -> None:
        self._schedule("samples", self._samples, self._update_samples)

    # -- means -----------------------------------------------------------------------------
    def compute_means(self, hidden: dict[str, str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Decode the mean latent of the selection and of its comparison group (no plotting).

        Parameters
        ----------
        hidden
            Groups not to decode (default: the privacy verdicts, ``state.groups.hidden``).

        Returns
        -------
        dict
            ``{'selection'|'comparison': {modality: array}}``; empty and hidden groups are absent.
        """
        groups, kind = self.state.groups, self.state.decode_from
        hidden = groups.hidden if hidden is None else hidden
        # Hidden groups are not even decoded: nothing of them reaches the page.
        means = {label: None if label in hidden else groups.mean_latent(label, kind) for label in MEAN_GROUPS}
        return decode_means(means, self._decode, kind)

    def _update_means(self) -> None:
        state, groups = self.state, self.state.groups
        n_sel, n_cmp, what = groups.size(SELECTION), groups.size(COMPARISON), groups.comparison_name()
        count = partial(state.policy.count_text, total=state.cohort.n_subjects)
        self._header.object = (
            f"**Selection**: {count(n_sel)} subjects · **comparison**: {escape_markdown(what)} ({count(n_cmp)}) · "
            f"decoded from the **{state.decode_from}** latent"
        )
        if n_sel == 0:
            self._set(decoded={}, hidden={}, message=(
                "No subjects selected. Draw a box or lasso on a latent view (or set a selection from "
                "Python) to decode the selection's mean."
            ))
            self._means.visible = False
            return
        hidden = {label: reason for label, reason in groups.hidden.items() if label in MEAN_GROUPS}
        decoded = self.compute_means(hidden)
        notes = [f"Not decoded: {reason}." for reason in hidden.values()]
        if n_cmp == 0:
            notes.append(
                "The comparison group is empty: every subject is selected. Showing the selection "
                "alone; compare with the whole cohort instead, or select fewer subjects."
                if groups.comparison == "rest" else
                f"The comparison group ({what}) is empty: showing the selection alone."
            )
        if decoded and not any(decoded.values()):
            notes.append(f"The decoder returns no modality for the {state.decode_from} latent; choose another.")
        self._set(decoded=decoded, hidden=hidden, message=" ".join(notes))
        if not any(decoded.values()):  # nothing decoded, or no modality for this latent kind
            self._means.visible = False
            return
        self._cards.show(decoded)
        self._means.visible = True

    def _set(self, **values: Any) -> None:
        super()._set(**values)
        text = self.message
        self._alert.object = escape_markdown(text)
        self._alert.visible = bool(text)

    # -- individual subjects -----------------------------------------------------------------
    def _update_samples(self) -> None:
        state = self.state
        self._samples.visible = self.show_subjects
        if self._samples.collapsed or not self.show_subjects or state.n_selected == 0 or self.n_samples == 0:
            with param.edit_constant(self):
                self.sample_rows = np.empty(0, dtype=np.int64)
            self._samples.visible = self.show_subjects and state.n_selected > 0
            return
        rows = state.backend.sample(state.groups.selection, self.n_samples)
        block = state.cohort.latent(state.decode_from)
        recon = decode_subjects(block, rows, self._decode, state.decode_from)
        self._cards.ensure({name: values[0] for name, values in recon.items()})
        raw, note = self._raw(rows)
        with param.edit_constant(self):
            self.sample_rows = rows
        self._sample_note.object = note
        self._sample_note.visible = bool(note)
        self._ensure_sample_slots()
        for i, slot in enumerate(self._sample_pipes):
            visible = i < len(rows)
            self._sample_rows[i].visible = visible
            if not visible:
                continue
            self._sample_rows[i][0].object = f"**subject {escape_markdown(state.cohort.ids[rows[i]])}** (row {rows[i]})"
            for modality, pipe in slot.items():
                data = {}
                if modality in recon:
                    data["reconstruction"] = recon[modality][i]
                if raw is not None and modality in raw:
                    data["original"] = raw[modality][i]
                pipe.send(data)

    def _raw(self, rows: np.ndarray) -> tuple[dict[str, np.ndarray] | None, str]:
        if self._raw_source is None:
            reason = "this cohort names no raw source"
            return None, f"Original records are not shown: {reason}. Reconstructions only."
        try:
            raw = self._raw_source.raw(np.asarray(self.state.cohort.ids[rows]))
        except Exception as exc:  # reading raw files can fail per subject; the pane stays up
            return None, f"Original records could not be read ({exc}). Reconstructions only."
        return {name: np.asarray(values) for name, values in dict(raw).items()}, ""

    def _ensure_sample_slots(self) -> None:
        if len(self._sample_pipes) == MAX_SAMPLES and self._sample_specs == self._cards.specs:
            return
        self._sample_specs = self._cards.specs
        rows = []
        self._sample_pipes = []
        # Without raw records there is nothing to overlay or subtract: one panel per modality, not
        # three, which halves the Bokeh models the first selection builds.
        names = SUBJECT_GROUPS if self._raw_source is not None else ("reconstruction",)
        for _ in range(MAX_SAMPLES):
            pipes = {name: hv.streams.Pipe(data={}) for name in self._sample_specs}
            plots = [
                create_modality_plot(
                    pipes[name], spec, group_names=names, layout="stacked", frame=self._cards.frame(name),
                    width=320, height=120, size=120,
                )
                for name, spec in self._sample_specs.items()
            ]
            self._sample_pipes.append(pipes)
            rows.append(pn.Column(markdown(""), pn.Row(*plots), visible=False))
        self._sample_rows.objects = rows
