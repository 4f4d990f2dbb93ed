"""The decode pane: what the model decodes for the selection, its comparison group and a few subjects."""

from __future__ import annotations

from typing import Any, Callable

import holoviews as hv
import numpy as np
import panel as pn
import param

from lse_panel.analysis.decode import Decoder, decode_means, decode_subjects
from lse_panel.analysis.groups import COMPARISON, SELECTION
from lse_panel.cohort.schema import Modality
from lse_panel.components.scheduling import Scheduler
from lse_panel.components.state import ExplorerState
from lse_panel.config import SETTINGS
from lse_panel.plotting.signals import create_modality_plot, modality_spec
from lse_panel.sources import RawSource

MAX_SAMPLES = SETTINGS.max_selection_sample
"""Most subjects shown as original vs reconstruction: individual records are heavy and sensitive."""

MEAN_GROUPS = (SELECTION, COMPARISON)
SUBJECT_GROUPS = ("original", "reconstruction")


def frame_players(specs: dict[str, Modality]) -> dict[str, pn.widgets.Player]:
    """One looping frame player per image-sequence modality, paced by its frame interval."""
    return {
        name: pn.widgets.Player(
            label=f"{name} frame", start=0, end=spec.n_frames - 1, value=0, loop_policy="loop",
            interval=max(int(spec.frame_interval_ms), 20), show_loop_controls=False, width=300,
        )
        for name, spec in specs.items()
        if spec.kind == "image_sequence"
    }


class DecodePane(pn.viewable.Viewer):
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

    state = param.ClassSelector(class_=ExplorerState, constant=True, doc="The session state this pane renders.")
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
    message = param.String(default="", constant=True, doc="What the pane tells the user instead of (or above) plots.")

    def __init__(
        self, state: ExplorerState, decode: Decoder, *, raw_source: RawSource | None = None, **params: Any
    ) -> None:
        if not state.policy.individual_views:
            params.setdefault("show_subjects", False)
        super().__init__(state=state, **params)
        self._decode = decode
        self._raw_source = raw_source
        self._specs: dict[str, Modality] = {}
        self._players: dict[str, pn.widgets.Player] = {}
        self._mean_pipes: dict[str, hv.streams.Pipe] = {}
        self._sample_pipes: list[dict[str, hv.streams.Pipe]] = []
        self.scheduler = Scheduler()

        self._decode_from = pn.widgets.RadioButtonGroup.from_param(
            state.param.decode_from, name="Decode from", button_type="primary", button_style="outline"
        )
        self._header = pn.pane.Markdown("", margin=(0, 10))
        self._alert = pn.pane.Alert("", alert_type="info", visible=False)
        self._means = pn.Column(sizing_mode="stretch_width")
        self._sample_note = pn.pane.Markdown("", visible=False)
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

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # -- scheduling ------------------------------------------------------------------------
    def _schedule(self, name: str, area: pn.viewable.Viewable, work: Callable[[], None]) -> None:
        """Recompute through the pane's :class:`~lse_panel.components.scheduling.Scheduler`."""
        self.scheduler.schedule(name, area, work)

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
        self._header.object = (
            f"**Selection**: {n_sel:,} subjects · **comparison**: {what} ({n_cmp:,}) · "
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
        self._ensure_plots(next(iter(decoded.values())))
        for modality, pipe in self._mean_pipes.items():
            pipe.send({group: items[modality] for group, items in decoded.items() if modality in items})
        self._means.visible = True

    def _set(self, **values: Any) -> None:
        with param.edit_constant(self):
            self.param.update(**values)
        text = self.message
        self._alert.object = text
        self._alert.visible = bool(text)

    # -- plots, built once per set of modalities ---------------------------------------------
    def _ensure_plots(self, items: dict[str, np.ndarray]) -> None:
        modalities = self.state.cohort.modalities
        specs = {name: modality_spec(modalities, name, np.asarray(item)) for name, item in items.items()}
        if specs == self._specs:
            return
        self._specs = specs
        self._players = frame_players(specs)
        self._mean_pipes = {name: hv.streams.Pipe(data={}) for name in specs}
        cards = []
        for name, spec in specs.items():
            plot = create_modality_plot(
                self._mean_pipes[name], spec, group_names=MEAN_GROUPS, frame=self._frame(name)
            )
            body = [self._players[name], plot] if name in self._players else [plot]
            cards.append(pn.Card(*body, title=f"{name} ({spec.kind}): mean of each group", sizing_mode="stretch_width"))
        self._means.objects = cards
        self._sample_pipes = []
        self._sample_rows.objects = []

    def _frame(self, name: str) -> Any:
        player = self._players.get(name)
        return player.param.value if player is not None else None

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
        if not self._specs:
            self._ensure_plots({name: values[0] for name, values in recon.items()})
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
            self._sample_rows[i][0].object = f"**subject {state.cohort.ids[rows[i]]}** (row {rows[i]})"
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
        if len(self._sample_pipes) == MAX_SAMPLES:
            return
        rows = []
        self._sample_pipes = []
        # Without raw records there is nothing to overlay or subtract: one panel per modality, not
        # three, which halves the Bokeh models the first selection builds.
        names = SUBJECT_GROUPS if self._raw_source is not None else ("reconstruction",)
        for _ in range(MAX_SAMPLES):
            pipes = {name: hv.streams.Pipe(data={}) for name in self._specs}
            plots = [
                create_modality_plot(
                    pipes[name], spec, group_names=names, layout="stacked", frame=self._frame(name),
                    width=320, height=120, size=120,
                )
                for name, spec in self._specs.items()
            ]
            self._sample_pipes.append(pipes)
            rows.append(pn.Column(pn.pane.Markdown(""), pn.Row(*plots), visible=False))
        self._sample_rows.objects = rows
