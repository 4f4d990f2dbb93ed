"""The subject inspector: one clicked subject's phenotypes, raw records and reconstructions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param

from lse_panel.analysis.decode import Decoder
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


class SubjectInspector(pn.viewable.Viewer):
    """The subject at ``state.inspected``: phenotypes, then each modality as original vs reconstruction.

    Modalities are drawn by their kind (signal: channel curves; image sequence: a frame player),
    never by name. The original comes from ``raw_source.raw(ids)`` when the bundle can
    regenerate or read raw records (:func:`lse_panel.sources.open_raw_source`); the
    reconstruction decodes the subject's latent of kind ``state.decode_from``.
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

    def records(self, row: int) -> dict[str, dict[str, np.ndarray]]:
        """Modality → {"original": item, "reconstruction": item} for subject ``row`` (what exists)."""
        cohort = self.state.cohort
        out: dict[str, dict[str, np.ndarray]] = {}
        source = self.raw_source
        if source is not None:
            raw = source.raw(cohort.ids[[row]])
            for name, values in dict(raw).items():
                out.setdefault(name, {})["original"] = np.asarray(values)[0]
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
        from lse_panel.plotting.signals import create_modality_plot, modality_from_array

        cohort = self.state.cohort
        items: list[pn.viewable.Viewable] = [
            pn.pane.Markdown(f"### Subject {cohort.ids[row]}"),
        ]
        table = pn.widgets.Tabulator(
            subject_phenotypes(self.state, row), show_index=False, disabled=True, height=220, width=300,
            layout="fit_data",
        )
        panels: list[pn.viewable.Viewable] = []
        records = self.records(row)
        if not records:
            panels.append(pn.pane.Markdown("*No raw records or decoder available for this bundle.*"))
        for name, groups in records.items():
            item = next(iter(groups.values()))
            modality = cohort.modalities.get(name) or modality_from_array(name, item.shape)
            if modality.kind == "image_sequence":
                player = pn.widgets.Player(
                    start=0, end=modality.n_frames - 1, value=0, loop_policy="loop", interval=120, width=260,
                    show_value=True, name=f"{name} frame",
                )
                plot = create_modality_plot(groups, modality, frame=player.param.value, difference=False, size=160)
                panels.append(pn.Column(pn.pane.Markdown(f"**{name}**"), pn.pane.HoloViews(plot), player))
            else:
                plot = create_modality_plot(groups, modality, layout="stacked")
                panels.append(pn.Column(pn.pane.Markdown(f"**{name}**"), pn.pane.HoloViews(plot)))
        note = (
            f"Reconstructions decode the subject's **{self.state.decode_from}** latent."
            if self.decode is not None
            else "No decoder loaded: originals only."
        )
        items.append(pn.Row(table, pn.Column(pn.pane.Markdown(note), pn.Row(*panels))))
        return items

    def __panel__(self) -> pn.viewable.Viewable:
        return self._body
