"""Raw and decoded records on one time axis: common window, channels matched by name, frames matched by time."""

from __future__ import annotations

import numpy as np

from lse_panel.analysis.alignment import Trace, align_signals, frame_at, frame_times, sequence_clock


def test_signals_cut_to_the_shorter_record_each_on_its_own_times() -> None:
    strip = Trace(np.ones((2, 10_000)), 1000.0, ("Lead I (Einthoven)", "Lead II"))  # 10 s
    beat = Trace(np.zeros((3, 600)), 500.0, ("I", "II", "V1"))  # 1.2 s
    channels, curves, note = align_signals({"original": strip, "reconstruction": beat},
                                           canonical={"Lead I (Einthoven)": "I", "Lead II": "II"})
    assert channels == ["I", "II", "V1"]
    time, values = curves["I"]["original"]
    assert len(time) == 1200 and time[-1] == 1199.0  # 1.2 s of the strip at 1 ms steps, not resampled
    assert curves["I"]["reconstruction"][0][-1] == 1198.0  # 600 samples at 2 ms
    assert set(curves["V1"]) == {"reconstruction"}
    assert "original: 10,000 samples at 1000 Hz (10,000 ms)" in note and "Shown: 0–1,200 ms" in note
    assert "not resampled" in note and "channels only in one record: V1" in note


def test_long_records_are_windowed_and_thinned() -> None:
    holter = Trace(np.random.default_rng(0).normal(size=(2, 650_000)), 360.0, ("MLII", "V5"))  # 30 min
    channels, curves, note = align_signals({"original": holter}, max_window_ms=10_000, max_points=1_000)
    time, values = curves["MLII"]["original"]
    assert time[-1] < 10_000 and len(time) <= 1_000
    np.testing.assert_array_equal(values, holter.values[0, : 3600 : 4])
    assert "Shown: 0–10,000 ms" in note and "drawn thinned (original: one sample in 4)" in note


def test_frames_matched_by_time() -> None:
    times = frame_times(4, 40.0)
    assert [frame_at(times, t) for t in (0, 19, 21, 119, 500)] == [0, 0, 1, 3, 3]
    clock, note = sequence_clock({"original": (2, 2000.0), "reconstruction": (16, 40.0)})
    assert clock[0] == 0 and clock[-1] < 4000 and np.allclose(np.diff(clock), clock[1])
    assert len(clock) <= 201
    assert "original: 2 frames every 2000 ms; reconstruction: 16 frames every 40 ms" in note
    assert "nearest in time" in note
