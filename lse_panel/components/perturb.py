"""The perturbation pane: the selection's mean latent moved along a direction, decoded live beside the original."""

from __future__ import annotations

from typing import Any

import numpy as np
import panel as pn
import param

from lse_panel.analysis.decode import Decoder
from lse_panel.analysis.groups import COMPARISON, SELECTION
from lse_panel.analysis.latent_paths import (
    decode_path,
    direction_from_means,
    perturb,
    unit_direction,
)
from lse_panel.cohort.derived import latent_statistics, principal_axes
from lse_panel.components.modality_cards import ModalityCards
from lse_panel.components.pane import Pane
from lse_panel.components.state import ExplorerState

N_PRINCIPAL = 5
"""Principal directions offered: beyond the fifth, a 64-value latent's directions explain little each."""

MAX_SD = 4.0
"""Largest perturbation, in standard deviations of the cohort along the direction."""

PERTURB_GROUPS = ("perturbed", "original")

DIRECTION_TYPES = {
    "top principal directions": "principal",
    "single latent dimension": "dimension",
    "comparison → selection": "group",
}


class _LivePane(Pane):
    """What both latent-path panes share beyond :class:`Pane`: the reason a group may not be decoded."""

    @staticmethod
    def _privacy_reason(groups: Any, labels: tuple[str, ...]) -> str | None:
        """Why any of ``labels`` of ``groups`` may not be decoded (the session's privacy verdicts), or ``None``."""
        reasons = [groups.hidden[label] for label in labels if label in groups.hidden]
        return "; ".join(reasons) if reasons else None


class PerturbPane(_LivePane):
    """The selection's mean latent moved along a direction and decoded, overlaid on its unperturbed decode.

    Directions: the cohort's top principal directions, a single latent dimension, or the
    direction from the comparison group's mean latent to the selection's. The amount is in
    standard deviations of the cohort's latents along the chosen direction, so +1 means "one
    typical spread further". Decoding follows the slider while it is dragged: each change
    decodes one latent, and drags arriving during a decode coalesce into one run (served).
    Every modality is drawn by its kind with the existing factories, as two groups,
    ``perturbed`` and ``original`` (image sequences add their difference).

    Parameters
    ----------
    state
        The session's :class:`ExplorerState`: its groups and ``decode_from``.
    decode
        A :class:`~lse_panel.analysis.decode.Decoder`.
    **params
        Initial values of the params below.

    Examples
    --------
    >>> from lse_panel.testing import tiny_cohort, tiny_decoder
    >>> state = ExplorerState(tiny_cohort(200))
    >>> pane = PerturbPane(state, tiny_decoder(8))
    >>> state.select(np.arange(50)); pane.amount = 1.5
    >>> sorted(pane.decoded)
    ['original', 'perturbed']
    """

    direction_type = param.Selector(
        default="principal", objects=DIRECTION_TYPES,
        doc="Which directions to move along: principal, a single latent dimension, or comparison → selection.",
    )
    direction = param.Integer(
        default=0, bounds=(0, N_PRINCIPAL - 1),
        doc="Which principal direction (0 = largest variance) or latent dimension; unused for comparison → selection.",
    )
    amount = param.Number(
        default=0.0, bounds=(-MAX_SD, MAX_SD), step=0.1,
        doc="How far to move, in standard deviations of the cohort's latents along the direction.",
    )
    decoded = param.Dict(
        default={}, constant=True,
        doc="Last decode: {'perturbed'|'original': {modality: array}}; empty when nothing may be shown.",
    )
    latent = param.Array(
        default=None, allow_None=True, constant=True,
        doc="The perturbed latent (d,) last decoded; None when nothing is decoded.",
    )
    unit = param.Array(
        default=None, allow_None=True, constant=True, doc="The current unit direction (d,); None when undefined.",
    )
    sd = param.Number(
        default=0.0, constant=True, doc="Standard deviation of the cohort's latents along the direction (latent units).",
    )

    def __init__(self, state: ExplorerState, decode: Decoder, **params: Any) -> None:
        super().__init__(state=state, **params)
        self._decode = decode
        self._mean: np.ndarray | None = None
        self._original: dict[str, np.ndarray] = {}
        self._cards = ModalityCards(
            state.cohort.modalities, PERTURB_GROUPS, lambda name, spec: f"{name} ({spec.kind}): perturbed vs original"
        )
        self._set_direction_bounds()

        self._type_widget = pn.widgets.RadioButtonGroup.from_param(
            self.param.direction_type, color="primary", variant="outline"
        )
        self._direction_widget = pn.widgets.IntSlider.from_param(self.param.direction, label="Direction", width=220)
        self._amount_widget = pn.widgets.FloatSlider.from_param(
            self.param.amount, label="Amount (SD along the direction)", width=320
        )
        self._reset = pn.widgets.Button(label="Reset to 0", color="light", width=100)
        self._reset.on_click(self._on_reset)
        self._header = pn.pane.Markdown("", margin=(0, 10))
        self._alert = pn.pane.Alert("", alert_type="info", visible=False)
        self._plots = self._cards.layout
        self._layout = pn.Column(
            self._type_widget,
            pn.Row(self._direction_widget, self._amount_widget, self._reset),
            self._header,
            self._alert,
            self._plots,
            sizing_mode="stretch_width",
        )
        self._set_direction_bounds()
        state.param.watch(self._on_groups_change, ["groups", "decode_from"])
        self.param.watch(self._on_direction_type, ["direction_type"])
        self.param.watch(self._on_direction_change, ["direction"])
        self.param.watch(self._on_amount_change, ["amount"])
        self._update(full=True)

    # -- events --------------------------------------------------------------------------------
    def _on_groups_change(self, *events: param.parameterized.Event) -> None:
        if any(e.name == "decode_from" for e in events):
            self._set_direction_bounds()
        self._schedule("full", self._plots, lambda: self._update(full=True))

    def _on_direction_type(self, *events: param.parameterized.Event) -> None:
        self._set_direction_bounds()
        self._schedule("direction", self._plots, lambda: self._update(full=False))

    def _on_direction_change(self, *events: param.parameterized.Event) -> None:
        self._schedule("direction", self._plots, lambda: self._update(full=False))

    def _on_amount_change(self, *events: param.parameterized.Event) -> None:
        self._schedule("amount", self._plots, lambda: self._update(full=False))

    def _on_reset(self, *_: Any) -> None:
        self.amount = 0.0

    def _set_direction_bounds(self) -> None:
        d = self.state.cohort.latent(self.state.decode_from).shape[1]
        top = {"principal": min(N_PRINCIPAL, d) - 1, "dimension": d - 1, "group": 0}[self.direction_type]
        with param.parameterized.batch_call_watchers(self):
            if self.direction > top:
                self.direction = top
            self.param.direction.bounds = (0, top)
        widget = getattr(self, "_direction_widget", None)
        if widget is not None:
            widget.end = max(top, 1)  # a slider needs start < end; "group" disables it instead
            widget.disabled = self.direction_type == "group"

    # -- computing -----------------------------------------------------------------------------
    def compute_direction(self) -> tuple[np.ndarray, float, str]:
        """The current unit direction, the cohort's SD along it, and a label (no decoding).

        Raises
        ------
        ValueError
            When the direction is undefined (comparison → selection with an empty group or equal means).
        """
        state, cohort = self.state, self.state.cohort
        kind = state.decode_from
        cov = latent_statistics(cohort, kind)["cov"]
        if self.direction_type == "principal":
            directions, variance = principal_axes(cohort, kind, N_PRINCIPAL)
            i = min(self.direction, len(directions) - 1)
            share = variance[i] / max(float(np.trace(cov)), 1e-300)
            unit, label = directions[i], f"principal direction {i + 1} ({share:.0%} of the latent variance)"
        elif self.direction_type == "dimension":
            unit, label = unit_direction(self.direction, cov.shape[0]), f"latent dimension {self.direction}"
        else:
            means = self._group_means()
            if means["selection"] is None or means["comparison"] is None:
                raise ValueError("the comparison group is empty, so there is no comparison → selection direction")
            unit, length = direction_from_means(means["selection"], means["comparison"])
            sd = float(np.sqrt(max(float(unit @ cov @ unit), 0.0)))
            # The gap in the slider's unit: moving by this amount reaches the selection's mean from the comparison's.
            gap = f"{length / sd:.2f} SD" if sd > 0 else f"{length:.3g} latent units"
            return unit, sd, f"comparison → selection (the two means are {gap} apart)"
        sd = float(np.sqrt(max(float(unit @ cov @ unit), 0.0)))
        return unit, sd, label

    def _group_means(self) -> dict[str, np.ndarray | None]:
        groups, kind = self.state.groups, self.state.decode_from
        return {label: groups.mean_latent(label, kind) for label in (SELECTION, COMPARISON)}

    def _update(self, *, full: bool) -> None:
        state = self.state
        n = state.n_selected
        if n == 0:
            return self._clear(
                "No subjects selected. Draw a box or lasso on a latent view to perturb the selection's mean latent."
            )
        needed = (SELECTION, COMPARISON) if self.direction_type == "group" else (SELECTION,)
        reason = self._privacy_reason(state.groups, needed)
        if reason is not None:
            return self._clear(f"Nothing decoded. {reason}.")
        try:
            unit, sd, label = self.compute_direction()
        except ValueError as exc:
            return self._clear(f"Nothing decoded: {exc}. Choose another direction type or change the selection.")
        if full or self._mean is None:
            self._mean = self._group_means()["selection"]
            self._original = {}
        latents = perturb(self._mean, unit, [self.amount * sd])
        if not self._original:
            latents = np.vstack([latents, self._mean[None]])
        out = decode_path(self._decode, latents, state.decode_from)
        perturbed = {name: values[0] for name, values in out.items()}
        if not self._original:
            self._original = {name: values[1] for name, values in out.items()}
        decoded = {"perturbed": perturbed, "original": self._original}
        self._set(decoded=decoded, latent=latents[0], unit=unit, sd=sd, message="")
        self._header.object = (
            f"Mean latent of the **selection** ({n:,} subjects, **{state.decode_from}** latent) moved by "
            f"**{self.amount:+.2f} SD** ({self.amount * sd:+.3g} latent units) along {label}."
        )
        self._alert.visible = False
        self._cards.show(decoded)
        self._plots.visible = True

    def _clear(self, message: str) -> None:
        self._mean, self._original = None, {}
        self._set(decoded={}, latent=None, unit=None, sd=0.0, message=message)
        self._header.object = ""
        self._alert.object = message
        self._alert.visible = True
        self._plots.visible = False
