"""HoloViews factories and helpers for paths through latent space: the path on a map, step colours, image strips."""

from __future__ import annotations

from typing import Any, Mapping

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh options these factories set)
import numpy as np

from lse_panel.palette import GROUP_COLORS

__all__ = ["END_COLOUR", "MONTAGE_GAP", "START_COLOUR", "colour_ramp", "create_path_plot", "image_montage", "step_labels"]

MONTAGE_GAP = 2
"""Pixels between the steps' images in the image strip."""

START_COLOUR, END_COLOUR = GROUP_COLORS[1], GROUP_COLORS[0]
"""The ramp runs from the comparison's colour to the selection's, as in the decode pane."""


def colour_ramp(n: int, start: str = START_COLOUR, end: str = END_COLOUR) -> list[str]:
    """``n`` hex colours evenly spaced in RGB from ``start`` to ``end`` (both included).

    Parameters
    ----------
    n
        Number of colours.
    start, end
        ``#rrggbb`` endpoints.

    Returns
    -------
    list of str
        ``#rrggbb`` colours.
    """
    a = np.array([int(start[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    b = np.array([int(end[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    t = np.linspace(0.0, 1.0, max(int(n), 1))[:, None]
    rgb = np.rint((1 - t) * a + t * b).astype(int)
    return ["#{:02x}{:02x}{:02x}".format(*row) for row in rgb]


def step_labels(steps: int, start: str, end: str) -> list[str]:
    """Group names of the steps: ``"0 · start"``, ``"1"``, …, ``"N-1 · end"`` (unique, short for legends)."""
    labels = [str(i) for i in range(steps)]
    labels[0], labels[-1] = f"0 · {start}", f"{steps - 1} · {end}"
    return labels


def image_montage(values: np.ndarray, gap: int = MONTAGE_GAP) -> np.ndarray:
    """Image sequences of every step side by side: ``(steps, frames, h, w)`` → ``(frames, h, steps·w + gaps)``.

    One image per frame holds the whole strip, so the strip is one plot however many steps
    (measured: a row of 20 separate image plots made a new path cost ~0.2 s more to draw).
    Gaps take the strip's minimum, so they read as background.
    """
    values = np.asarray(values)
    steps, frames, h, w = values.shape
    out = np.full((frames, h, steps * w + (steps - 1) * gap), values.min() if values.size else 0, dtype=values.dtype)
    for i in range(steps):
        out[:, :, i * (w + gap) : i * (w + gap) + w] = values[i]
    return out


def create_path_plot(data: Mapping[str, Any] | None = None, *, x: str = "x", y: str = "y") -> hv.Overlay:
    """An interpolation path on a 2-D map: a line through the steps, dots coloured by step, ends marked.

    Parameters
    ----------
    data
        ``{"coords": (steps, 2), "labels": [str]}``, or ``None``/empty for nothing drawn.
    x, y
        Names of the map's coordinate dimensions (those of the latent view it overlays).

    Returns
    -------
    holoviews.Overlay
        ``Path * Points``; empty elements when there is no path.
    """
    coords = np.empty((0, 2)) if not data else np.asarray(data["coords"], dtype=np.float64).reshape(-1, 2)
    steps = len(coords)
    labels = list(data.get("labels", [])) if data else []
    if len(labels) != steps:
        labels = [str(i) for i in range(steps)]
    # No path at all rather than one of zero points: Bokeh cannot deserialise an empty MultiLine
    # ("Invalid typed array length: -1"), which broke the whole page's rendering.
    path = hv.Path([coords] if steps else [], [x, y]).opts(color="black", line_width=2, line_dash="dashed", alpha=0.8)
    points = hv.Points(
        {x: coords[:, 0], y: coords[:, 1], "step": np.arange(steps), "label": labels}, [x, y], ["step", "label"]
    ).opts(
        color="step", cmap=colour_ramp(max(steps, 2)), size=9, line_color="black", colorbar=False,
        tools=["hover"], clim=(0, max(steps - 1, 1)),
    )
    return path * points
