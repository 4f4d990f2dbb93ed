"""HoloViews factories for one subject's raw record beside its reconstruction, each on its own times in ms."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh options these factories set)
import numpy as np

from lse_panel.analysis.alignment import frame_at

RECORD_COLORS: Mapping[str, str] = {"original": "#404040", "reconstruction": "#d62728"}
"""Colour of each trace: the raw record in dark grey, the reconstruction in red."""


def create_signal_records(
    channels: Sequence[str], curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], *,
    units: str = "", width: int = 520, row_height: int = 34, title: str = "",
) -> hv.Overlay:
    """Every channel stacked top to bottom, each trace at its own sample times (ms).

    Parameters
    ----------
    channels
        Channel names, top first.
    curves
        Channel → trace name (``"original"``, ``"reconstruction"``) → ``(time_ms, values)``, as
        :func:`lse_panel.analysis.alignment.align_signals` returns them.
    units
        The values' units, for the axis label.
    width, row_height
        Plot width and height per channel, pixels.
    title
        Plot title.

    Returns
    -------
    holoviews.Overlay
        One ``Curve`` per trace (channels joined with NaN breaks), y ticks labelled by channel.
    """
    spans = [np.nanmax(v) - np.nanmin(v) for per in curves.values() for _, v in per.values() if v.size]
    spread = 1.1 * max([s for s in spans if np.isfinite(s)] or [1.0]) or 1.0
    traces: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for i, channel in enumerate(channels):
        for trace, (time, values) in curves[channel].items():
            xs, ys = traces.setdefault(trace, ([], []))
            centre = np.nanmedian(values) if values.size else 0.0
            xs.append(np.append(time, np.nan))
            ys.append(np.append(values - centre - i * spread, np.nan))
    ticks = [(-i * spread, name) for i, name in enumerate(channels)]
    elements = [
        hv.Curve((np.concatenate(xs), np.concatenate(ys)), "time (ms)", units or "value", label=trace).opts(
            color=RECORD_COLORS.get(trace, "#1f77b4"), line_width=1.0 if trace == "original" else 1.6
        )
        for trace, (xs, ys) in traces.items()
    ]
    return hv.Overlay(elements).opts(
        width=width, height=max(160, row_height * len(channels) + 60), yticks=ticks, ylabel="",
        legend_position="top", title=title, show_grid=True,
    )


def create_sequence_records(
    sequences: Mapping[str, tuple[np.ndarray, np.ndarray]], clock: np.ndarray, step: Any = 0, *, modality: str = "",
    size: int = 180,
) -> dict[str, hv.Image | hv.DynamicMap]:
    """Each image sequence's frame nearest to one moment, one plot per sequence (put them side by side).

    Parameters
    ----------
    sequences
        Trace name → ``(frames (T, H, W), frame start times in ms (T,))``; the sequences may differ
        in frame count, interval and size.
    clock
        The moments a player steps through, ms (:func:`lse_panel.analysis.alignment.sequence_clock`).
    step
        Which moment: an index into ``clock``, or a param reference to one (a ``Player``'s
        ``param.value``) for a ``DynamicMap``.
    modality
        The modality's name: it names the images' dimensions, so they share axes with nothing else
        on the page (the latent view's ``x`` and ``y``) nor with each other (their sizes differ).
    size
        Width of each image, pixels (heights follow each image's aspect).
    """
    def frame(name: str, step: int) -> hv.Image:
        frames, times = sequences[name]
        t = float(clock[int(np.clip(step, 0, len(clock) - 1))])
        k = frame_at(times, t)
        h, w = frames.shape[1:]
        dims = [f"{modality}_{name}_{axis}" for axis in ("x", "y")]
        image = hv.Image(np.flipud(frames[k]), bounds=(0, 0, w, h), kdims=dims, vdims=[f"{modality}_{name}_intensity"])
        return image.opts(
            cmap="gray", width=size, height=max(60, int(size * h / max(w, 1))), xaxis=None, yaxis=None,
            title=f"{name} {k + 1}/{len(frames)} · {times[k]:,.0f} ms", fontsize={"title": "9pt"}, toolbar=None,
            framewise=True,
        )

    if isinstance(step, (int, np.integer)):
        return {name: frame(name, int(step)) for name in sequences}
    # One plot per sequence, all on the same player: a Layout of them, put in a Row beside another
    # HoloViews pane, was drawn with zero width (only its toolbar showed) in Chromium.
    return {name: hv.DynamicMap(lambda step, name=name: frame(name, step), streams=hv.streams.streams_list_from_dict({"step": step}))
            for name in sequences}
