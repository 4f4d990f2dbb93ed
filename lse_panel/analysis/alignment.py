"""A raw record and its reconstruction on one time axis in ms: channels matched by name, a shared window, frames matched by time.

Real records and decoded ones rarely agree in length or rate (a 10 s rhythm strip at 1000 Hz
against a 1.2 s median beat at 500 Hz; a 2-frame fMRI-style series against a 16-frame cine).
Nothing here resamples values: each trace keeps its own sample times and is cut to a common
window starting at 0 ms; image sequences are shown frame by frame at the same moment, each
showing its frame nearest in time. Every function returns a note saying what was done, for the
page to show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

MAX_WINDOW_MS = 10_000.0
"""Longest stretch of a raw signal drawn (a 30-minute Holter record is not sent to the browser)."""

MAX_POINTS = 4_000
"""Samples per channel drawn at most; longer traces are thinned by taking every k-th sample."""


@dataclass(frozen=True)
class Trace:
    """One signal record to draw: ``values`` ``(channels, samples)``, its sampling rate and channel names."""

    values: np.ndarray
    sampling_rate_hz: float
    channel_names: tuple[str, ...]

    @property
    def duration_ms(self) -> float:
        return self.values.shape[1] * 1000.0 / self.sampling_rate_hz

    def describe(self) -> str:
        return f"{self.values.shape[1]:,} samples at {self.sampling_rate_hz:g} Hz ({self.duration_ms:,.0f} ms)"


def align_signals(traces: Mapping[str, Trace], *, canonical: Mapping[str, str] | None = None,
                  max_window_ms: float = MAX_WINDOW_MS, max_points: int = MAX_POINTS
                  ) -> tuple[list[str], dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], str]:
    """Cut every trace to a common window from 0 ms and match their channels by name.

    Parameters
    ----------
    traces
        Name (``"original"``, ``"reconstruction"``) → trace.
    canonical
        Maps a channel name to the spelling used to match it (``{"Lead I (Einthoven)": "I"}``);
        names are matched as given when a name is absent.
    max_window_ms
        The window is the shortest trace's duration when there is more than one (what both
        show), the trace's own duration otherwise, and never longer than this.
    max_points
        Each channel is thinned to at most this many points (every k-th sample).

    Returns
    -------
    channels
        Channel names in the order of the first trace, then any others.
    curves
        Channel → trace name → ``(time_ms, values)``.
    note
        What was drawn: each trace's length and rate, the window, any thinning.
    """
    canonical = canonical or {}
    durations = [t.duration_ms for t in traces.values()]
    window = min(min(durations) if len(traces) > 1 else durations[0], max_window_ms) if durations else 0.0
    channels: list[str] = []
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    thinned = []
    for name, trace in traces.items():
        keep = int(np.ceil(window * trace.sampling_rate_hz / 1000.0 - 1e-9))
        keep = max(1, min(keep, trace.values.shape[1]))
        step = max(1, int(np.ceil(keep / max_points)))
        if step > 1:
            thinned.append(f"{name}: one sample in {step}")
        time = np.arange(0, keep, step) * (1000.0 / trace.sampling_rate_hz)
        for i, channel in enumerate(trace.channel_names):
            key = canonical.get(channel, channel)
            if key not in curves:
                channels.append(key)
                curves[key] = {}
            curves[key][name] = (time, np.asarray(trace.values[i, :keep:step], dtype=np.float64))
    parts = [f"{name}: {trace.describe()}" for name, trace in traces.items()]
    note = "; ".join(parts) + f". Shown: 0–{window:,.0f} ms, each on its own sample times (not resampled), aligned at the start"
    if thinned:
        note += "; drawn thinned (" + ", ".join(thinned) + ")"
    unmatched = [c for c in channels if len(curves[c]) < len(traces)]
    if len(traces) > 1 and unmatched:
        note += f"; channels only in one record: {', '.join(unmatched[:6])}"
    return channels, curves, note + "."


def frame_times(n_frames: int, frame_interval_ms: float) -> np.ndarray:
    """Start time of each frame, ms."""
    return np.arange(n_frames, dtype=np.float64) * float(frame_interval_ms)


def frame_at(times_ms: Sequence[float] | np.ndarray, t_ms: float) -> int:
    """Index of the frame nearest in time to ``t_ms`` (the last one past the end)."""
    times = np.asarray(times_ms, dtype=np.float64)
    return int(np.clip(np.abs(times - float(t_ms)).argmin(), 0, len(times) - 1))


def sequence_clock(sequences: Mapping[str, tuple[int, float]]) -> tuple[np.ndarray, str]:
    """Moments (ms) a player steps through to show several image sequences together, and a note.

    Parameters
    ----------
    sequences
        Name → ``(n_frames, frame_interval_ms)``.

    Returns
    -------
    times
        From 0 to the longest sequence's last frame, at the finest frame interval (at most 200 steps).
    note
        Each sequence's frames and interval, and that each shows its frame nearest in time.
    """
    ends = [n * dt for n, dt in sequences.values()]
    finest = min(dt for _, dt in sequences.values()) if sequences else 1.0
    end = max(ends) if ends else 0.0
    step = max(finest, end / 200.0) if end else 1.0
    times = np.arange(0.0, max(end, step), step)
    parts = [f"{name}: {n} frames every {dt:g} ms" for name, (n, dt) in sequences.items()]
    note = "; ".join(parts)
    if len(sequences) > 1:
        note += ". Played on one clock in ms: each shows its frame nearest in time (frames are not interpolated)"
    return times, note + "."
