"""The subject inspector: one clicked subject's phenotypes, raw records and reconstructions on one time axis in ms."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import panel as pn
import param

from lse_panel.analysis.alignment import Trace, align_signals, frame_times, sequence_clock
from lse_panel.analysis.decode import Decoder
from lse_panel.cohort.records import ImageSequenceRecord, Record, RecordError, SignalRecord, lead_name
from lse_panel.cohort.schema import ImageSequenceModality, Modality, SignalModality
from lse_panel.components.state import ExplorerState
from lse_panel.sources import RawSource


def subject_phenotypes(state: ExplorerState, row: int) -> pd.DataFrame:
    """One subject's phenotypes as a small table: name, value (categories as labels), units."""
    records = []
    for name, spec in state.cohort.phenotype_specs.items():
        value = state.cohort.phenotype(name)[row]
        if spec.type == "continuous":
            shown = "missing" if not np.isfinite(value) else f"{float(value):.4g}"
        else:
            shown = spec.categories[int(value)] if int(value) >= 0 else "missing"
        records.append({"phenotype": name, "value": shown, "units": spec.units})
    return pd.DataFrame.from_records(records)


def declared_record(values: np.ndarray, modality: Modality, where: str) -> Record:
    """An array of a modality's declared shape as a record with the declared timing (a decoded or regenerated item)."""
    values = np.asarray(values, dtype=np.float32)
    if isinstance(modality, SignalModality):
        return SignalRecord(values, modality.sampling_rate_hz, modality.channel_names, modality.units, where)
    return ImageSequenceRecord(values, modality.frame_interval_ms, where)


class SubjectInspector(pn.viewable.Viewer):
    """The subject at ``state.inspected``: phenotypes, then each modality's raw record beside its reconstruction.

    Modalities are drawn by their kind, never by name: signals as stacked channels against time
    in ms, image sequences as frames side by side under one player. A raw record keeps its own
    length, sampling rate or frame interval (a 10 s strip at 1000 Hz beside a 600-sample decoded
    beat at 500 Hz): nothing is resampled, both are cut to a common window from 0 ms or shown at
    the same moment, and a note under each modality says so. Raw records come from the bundle's
    raw source (:func:`lse_panel.sources.open_raw_source`: ``records(row)`` for a user's files,
    ``raw(ids)`` for the synthetic generator); reconstructions decode the subject's latent of
    kind ``state.decode_from``.
    """

    enabled = param.Boolean(
        default=True,
        doc="Show individual-level data at all; off where access agreements forbid it.",
    )

    def __init__(
        self, state: ExplorerState, decode: Decoder | None = None, *, raw_source: RawSource | None = None,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.state = state
        self.decode = decode
        self.raw_source = raw_source
        self._body = pn.Column(self._placeholder(), sizing_mode="stretch_width")
        state.param.watch(self._on_inspected, ["inspected", "decode_from"])

    @staticmethod
    def _placeholder() -> pn.pane.Markdown:
        return pn.pane.Markdown("*Click a point in a latent view to open that subject.*")

    def records(self, row: int) -> dict[str, dict[str, Any]]:
        """Modality → what exists for subject ``row``.

        ``"original"``: a :class:`~lse_panel.cohort.records.SignalRecord` or
        :class:`~lse_panel.cohort.records.ImageSequenceRecord` with its own timing;
        ``"reconstruction"``: the decoded array, of the modality's declared shape; ``"error"``: why
        a raw file could not be read.
        """
        cohort = self.state.cohort
        out: dict[str, dict[str, Any]] = {}
        source = self.raw_source
        if source is not None and hasattr(source, "records"):  # the user's files, each with its own timing
            for name, record in source.records(int(row)).items():
                if isinstance(record, RecordError):
                    out.setdefault(name, {})["error"] = str(record)
                elif record is not None:
                    out.setdefault(name, {})["original"] = record
        elif source is not None:  # regenerated at the declared shapes
            for name, values in dict(source.raw(cohort.ids[[row]])).items():
                modality = cohort.modalities.get(name)
                if modality is not None:
                    out.setdefault(name, {})["original"] = declared_record(np.asarray(values)[0], modality, "generated")
        if self.decode is not None and self.state.decode_from in cohort.latents:
            latent = np.asarray(cohort.latent(self.state.decode_from)[[row]], dtype=np.float32)
            for name, values in dict(self.decode(latent, self.state.decode_from)).items():
                out.setdefault(name, {})["reconstruction"] = np.asarray(values)[0]
        return out

    def _on_inspected(self, *_: Any) -> None:
        row = self.state.inspected
        if row is None or not self.enabled:
            self._body[:] = [self._placeholder()]
            return
        self._body.loading = True
        try:
            self._body[:] = self._render(row)
        finally:
            self._body.loading = False

    def _render(self, row: int) -> list[pn.viewable.Viewable]:
        cohort = self.state.cohort
        items: list[pn.viewable.Viewable] = [pn.pane.Markdown(f"### Subject {cohort.ids[row]}")]
        table = pn.widgets.Tabulator(
            subject_phenotypes(self.state, row), show_index=False, disabled=True, height=220, width=300,
            layout="fit_data",
        )
        panels: list[pn.viewable.Viewable] = []
        records = self.records(row)
        if not records:
            panels.append(pn.pane.Markdown("*No raw records or decoder available for this bundle.*"))
        for name, found in records.items():
            panels.append(self._modality_panel(name, found))
        note = (
            f"Reconstructions decode the subject's **{self.state.decode_from}** latent."
            if self.decode is not None
            else "No decoder loaded: originals only."
        )
        items.append(pn.Row(table, pn.Column(pn.pane.Markdown(note), pn.Row(*panels))))
        return items

    def _modality_panel(self, name: str, found: Mapping[str, Any]) -> pn.viewable.Viewable:
        from lse_panel.plotting.records import create_sequence_records, create_signal_records

        modality = self.state.cohort.modalities.get(name)
        shown: dict[str, Record] = {}
        if "original" in found:
            shown["original"] = found["original"]
        if "reconstruction" in found and modality is not None:
            shown["reconstruction"] = declared_record(found["reconstruction"], modality, "decoded")
        header = [pn.pane.Markdown(f"**{name}**" + ("" if "original" in found else " (no raw record for this subject)"))]
        if "error" in found:
            header.append(pn.pane.Alert(f"The raw record could not be read: {found['error']}", alert_type="warning"))
        if not shown:
            return pn.Column(*header)
        first = next(iter(shown.values()))
        notes = [note for record in shown.values() for note in record.notes]
        if first.kind == "signal":
            traces = {trace: Trace(r.values, r.sampling_rate_hz, r.channel_names) for trace, r in shown.items()}
            names = {c: lead_name(c) for r in shown.values() for c in r.channel_names}
            channels, curves, text = align_signals(traces, canonical=names)
            units = getattr(modality, "units", "") if isinstance(modality, SignalModality) else first.units
            body: list[Any] = [pn.pane.HoloViews(create_signal_records(channels, curves, units=units), linked_axes=False)]
        else:
            sequences = {trace: (r.values, frame_times(len(r.values), r.frame_interval_ms)) for trace, r in shown.items()}
            clock, text = sequence_clock({trace: (len(r.values), r.frame_interval_ms) for trace, r in shown.items()})
            player = pn.widgets.Player(start=0, end=max(len(clock) - 1, 0), value=0, loop_policy="loop",
                                       interval=int(max(40, min(500, clock[1] - clock[0] if len(clock) > 1 else 100))),
                                       width=260, show_value=False, name=f"{name} time")
            plots = create_sequence_records(sequences, clock, player.param.value, modality=name)
            body = [pn.Row(*[pn.pane.HoloViews(plot, linked_axes=False) for plot in plots.values()]), player]
        if notes:
            text += " Original: " + "; ".join(notes) + "."
        declared = isinstance(modality, (SignalModality, ImageSequenceModality))
        width = 520 if first.kind == "signal" else 380
        return pn.Column(*header, *body, pn.pane.Markdown(text if declared else text + " (modality not declared)",
                                                          styles={"font-size": "0.85em"}, width=width))

    def __panel__(self) -> pn.viewable.Viewable:
        return self._body
