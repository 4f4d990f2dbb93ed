"""Decoded modalities drawn side by side, one card per modality, built once and fed new data through Pipes."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import holoviews as hv
import numpy as np
import panel as pn

from lse_panel.cohort.schema import Modality
from lse_panel.plotting.signals import create_modality_plot, modality_spec

SIGNAL_CELL = (150, 80)
"""Width and height of one channel's cell in a card: a 12-lead grid is 600 × 240 px, so an ECG and a
cine (three 150 px panels) sit side by side in a 1600 px window and the whole pane fits in 1000 px."""

IMAGE_SIZE = 150
"""Width of each image panel in a card."""


def frame_players(specs: Mapping[str, Modality]) -> dict[str, pn.widgets.Player]:
    """One looping frame player per image-sequence modality, paced by its frame interval."""
    return {
        name: pn.widgets.Player(
            label=f"{name} frame", start=0, end=spec.n_frames - 1, value=0, loop_policy="loop",
            interval=max(int(spec.frame_interval_ms), 20), show_loop_controls=False, width=300,
        )
        for name, spec in specs.items()
        if spec.kind == "image_sequence"
    }


class ModalityCards:
    """The cards of a decode: one per modality, drawn by its kind, side by side and wrapping.

    Built once per set of modalities (:meth:`show` rebuilds only when the modalities change); every
    later call only sends new data to the same plots. Signals are one grid of small per-channel
    cells, image sequences their groups' cines under one frame player: with :data:`SIGNAL_CELL`
    and :data:`IMAGE_SIZE`, an ECG and an MRI sit side by side in a 1600 × 1000 window, and a third
    modality wraps onto a second row.

    Parameters
    ----------
    modalities
        The cohort's declared modalities (undeclared ones are inferred from the arrays' shapes).
    group_names
        The groups every card draws, in colour order (e.g. ``("selection", "comparison")``).
    title
        ``title(name, spec)`` → the card's title.
    """

    def __init__(
        self, modalities: Mapping[str, Modality], group_names: Sequence[str], title: Callable[[str, Modality], str]
    ) -> None:
        self._modalities = modalities
        self._group_names = tuple(group_names)
        self._title = title
        self.specs: dict[str, Modality] = {}
        self.players: dict[str, pn.widgets.Player] = {}
        self.pipes: dict[str, hv.streams.Pipe] = {}
        self.layout = pn.FlexBox(sizing_mode="stretch_width", flex_wrap="wrap", gap="10px")

    def frame(self, name: str) -> Any:
        """The frame player's value of image-sequence modality ``name`` (a param reference), or ``None``."""
        player = self.players.get(name)
        return player.param.value if player is not None else None

    def ensure(self, items: Mapping[str, np.ndarray]) -> bool:
        """Build the cards for the modalities of ``items`` (one decoded item each) unless they exist; whether it built."""
        specs = {name: modality_spec(self._modalities, name, np.asarray(item)) for name, item in items.items()}
        if specs == self.specs:
            return False
        self.specs = specs
        self.players = frame_players(specs)
        self.pipes = {name: hv.streams.Pipe(data={}) for name in specs}
        cards = []
        for name, spec in specs.items():
            plot = create_modality_plot(
                self.pipes[name], spec, group_names=self._group_names, frame=self.frame(name),
                width=SIGNAL_CELL[0], height=SIGNAL_CELL[1], size=IMAGE_SIZE,
            )  # fmt: skip
            body = [self.players[name], plot] if name in self.players else [plot]
            cards.append(pn.Card(*body, title=self._title(name, spec), sizing_mode="fixed", collapsible=True))
        self.layout.objects = cards
        return True

    def show(self, decoded: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Draw ``{group: {modality: item}}``: build the cards if needed, then send each modality its groups."""
        first = next((items for items in decoded.values() if items), None)
        if first is None:
            return
        self.ensure(first)
        for name, pipe in self.pipes.items():
            pipe.send({group: items[name] for group, items in decoded.items() if name in items})
