"""Decoded-modality factories dispatch on the modality kind and draw exactly the data they get."""

from __future__ import annotations

from dataclasses import dataclass

import holoviews as hv
import numpy as np
import panel as pn
import pytest

from lse_panel.cohort.schema import ImageSequenceModality, SignalModality
from lse_panel.plotting.signals import (
    DIFFERENCE_CMAP,
    create_image_sequence_plot,
    create_modality_plot,
    create_signal_plot,
    signal_grid_coordinates,
    modality_from_array,
)

SIGNAL = SignalModality("ecg", ("I", "II", "V1"), n_samples=16, sampling_rate_hz=50.0)
CINE = ImageSequenceModality("mri", n_frames=4, height=6, width=5, frame_interval_ms=100.0)
RESP = SignalModality("resp", ("chest", "abdomen"), n_samples=10, sampling_rate_hz=10.0, units="L")


def _groups(shape: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"selection": rng.normal(size=shape), "comparison": rng.normal(size=shape)}


def _opts(element: hv.core.Dimensioned) -> dict:
    return hv.Store.lookup_options("bokeh", element, "plot").kwargs | hv.Store.lookup_options(
        "bokeh", element, "style"
    ).kwargs


def test_signal_grid_is_one_plot_with_every_channel_in_its_cell() -> None:
    groups = _groups(SIGNAL.shape)
    overlay = create_signal_plot(groups, SIGNAL, cols=2)
    assert isinstance(overlay, hv.Overlay)
    *curves, labels = list(overlay)
    assert [c.label for c in curves] == ["selection", "comparison"]
    assert list(labels.dimension_values("channel")) == list(SIGNAL.channel_names)
    n = SIGNAL.n_samples
    for curve, name in zip(curves, ["selection", "comparison"]):
        xs, ys = curve.dimension_values(0), curve.dimension_values(1)
        segments_x = xs.reshape(len(SIGNAL.channel_names), n + 1)
        segments_y = ys.reshape(len(SIGNAL.channel_names), n + 1)
        assert np.isnan(segments_y[:, -1]).all()  # one path, channels split by NaN
        # The value shapes are the group's, shifted by whole rows: differences are preserved.
        for channel in range(len(SIGNAL.channel_names)):
            np.testing.assert_allclose(np.diff(segments_y[channel, :n]), np.diff(groups[name][channel]))
        # Time in ms from the sampling rate: 1000 / 50 = 20 ms a sample; column 1 starts one cell right.
        assert segments_x[0, 1] - segments_x[0, 0] == pytest.approx(20.0)
        assert segments_x[1, 0] > segments_x[0, n - 1]
        assert segments_x[2, 0] == segments_x[0, 0]  # channel 2 wraps to row 2, column 0
        assert segments_y[2, 0] < segments_y[0, 0] - np.ptp(groups[name][0]) / 2
    assert len({_opts(c)["color"] for c in curves}) == 2


def test_signal_grid_coordinates_place_channels_by_row_and_column() -> None:
    item = np.zeros(SIGNAL.shape)
    xs, ys = signal_grid_coordinates(item, SIGNAL, cols=2, spread=3.0)
    ys = ys.reshape(3, -1)[:, :-1]
    assert (ys[0] == 0).all() and (ys[1] == 0).all() and (ys[2] == -3.0).all()


def test_signal_stacked_and_panels_layouts() -> None:
    groups = _groups(SIGNAL.shape)
    stacked = create_signal_plot(groups, SIGNAL, layout="stacked")
    xs = list(stacked)[0].dimension_values(0).reshape(3, -1)
    np.testing.assert_allclose(xs[0], xs[2], equal_nan=True)  # one column: every channel at the same times
    panels = create_signal_plot(groups, SIGNAL, layout="panels")
    assert isinstance(panels, hv.Layout) and len(panels) == len(SIGNAL.channel_names)
    for channel, overlay in enumerate(panels):
        assert _opts(overlay)["title"] == SIGNAL.channel_names[channel]
        np.testing.assert_allclose(list(overlay)[0].dimension_values(1), groups["selection"][channel])
    with pytest.raises(ValueError, match="layout"):
        create_signal_plot(groups, SIGNAL, layout="wide")  # type: ignore[arg-type]


def test_image_sequence_shows_groups_and_symmetric_difference() -> None:
    groups = _groups(CINE.shape)
    layout = create_image_sequence_plot(groups, CINE, frame=2)
    images = list(layout)
    assert [type(el) for el in images] == [hv.Image] * 3
    # Images are flipped so row 0 of the array is drawn at the top.
    np.testing.assert_allclose(images[0].dimension_values(2, flat=False), groups["selection"][2])
    np.testing.assert_allclose(images[1].dimension_values(2, flat=False), groups["comparison"][2])
    diff = groups["selection"] - groups["comparison"]
    np.testing.assert_allclose(images[2].dimension_values(2, flat=False), diff[2])
    opts = _opts(images[2])
    assert opts["cmap"] == DIFFERENCE_CMAP
    low, high = opts["clim"]
    assert low == -high == pytest.approx(-np.abs(diff).max())
    # Both groups share one intensity range, so they can be compared.
    assert _opts(images[0])["clim"] == _opts(images[1])["clim"]


def test_dispatch_is_on_kind_never_on_name() -> None:
    # A signal called "mri" and a cine called "ecg" are drawn by their kind.
    as_signal = SignalModality("mri", ("a", "b"), n_samples=8, sampling_rate_hz=8.0)
    as_cine = ImageSequenceModality("ecg", n_frames=2, height=3, width=3, frame_interval_ms=10.0)
    signal_plot = create_modality_plot(_groups(as_signal.shape), as_signal, frame=1, size=100)
    cine_plot = create_modality_plot(_groups(as_cine.shape), as_cine, layout="stacked", cols=2)
    assert isinstance(signal_plot, hv.Overlay)
    assert all(isinstance(el, hv.Curve) for el in list(signal_plot)[:2])
    assert all(isinstance(el, hv.Image) for el in cine_plot)


def test_a_third_made_up_signal_modality_renders() -> None:
    plot = create_modality_plot(_groups(RESP.shape), RESP)
    assert list(list(plot)[-1].dimension_values("channel")) == ["chest", "abdomen"]
    assert len(list(plot)[0].dimension_values(0)) == 2 * (RESP.n_samples + 1)
    hv.render(plot, backend="bokeh")
    hv.render(create_modality_plot(_groups(RESP.shape), RESP, layout="panels"), backend="bokeh")


def test_unknown_kind_is_refused_with_the_kinds_it_draws() -> None:
    @dataclass(frozen=True)
    class Volume:
        name: str = "ct"
        kind: str = "volume"

    with pytest.raises(ValueError, match="'signal' and 'image_sequence'"):
        create_modality_plot({}, Volume())


def test_modality_from_array_infers_kind_from_shape() -> None:
    assert modality_from_array("x", (2, 30)).kind == "signal"
    assert modality_from_array("x", (2, 30)).channel_names == ("ch0", "ch1")
    assert modality_from_array("y", (5, 4, 3)).shape == (5, 4, 3)
    with pytest.raises(ValueError, match="Declare the modality"):
        modality_from_array("z", (7,))


def test_pipe_sends_new_data_into_the_same_plot() -> None:
    pipe = hv.streams.Pipe(data={})
    dmap = create_signal_plot(pipe, SIGNAL, group_names=("selection", "comparison"), layout="stacked")
    assert isinstance(dmap, hv.DynamicMap)
    assert len(dmap[()]) == 3  # two groups and the channel labels, before any data arrive
    groups = _groups(SIGNAL.shape, seed=3)
    pipe.send({"selection": groups["selection"]})  # comparison missing: drawn empty, not dropped
    curves = list(dmap[()])
    first_channel = curves[0].dimension_values(1)[: SIGNAL.n_samples]
    np.testing.assert_allclose(np.diff(first_channel), np.diff(groups["selection"][0]))
    assert np.isnan(curves[1].dimension_values(1)).all()
    with pytest.raises(ValueError, match="group_names"):
        create_signal_plot(pipe, SIGNAL)


def test_one_player_drives_every_cine_panel() -> None:
    player = pn.widgets.Player(start=0, end=CINE.n_frames - 1, value=0)
    pipe = hv.streams.Pipe(data={})
    layout = create_image_sequence_plot(pipe, CINE, frame=player.param.value, group_names=("selection", "comparison"))
    groups = _groups(CINE.shape, seed=4)
    pipe.send(groups)
    player.value = 3
    panels = [dmap[()] for dmap in layout]
    np.testing.assert_allclose(panels[0].dimension_values(2, flat=False), groups["selection"][3])
    np.testing.assert_allclose(
        panels[2].dimension_values(2, flat=False), groups["selection"][3] - groups["comparison"][3]
    )
    root = pn.panel(layout).get_root()  # renders with Bokeh, no browser
    assert root is not None
