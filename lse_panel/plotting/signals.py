"""HoloViews factories for decoded modalities, dispatched on the modality kind (signal, image_sequence)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Literal, Mapping, Sequence

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh options these factories set)
import numpy as np

from lse_panel.cohort.schema import ImageSequenceModality, Modality, SignalModality
from lse_panel.palette import GROUP_COLORS

DIFFERENCE_CMAP = "RdBu_r"
"""Diverging colour map of difference images; zero is white."""

Groups = Mapping[str, np.ndarray]
"""Group name → one decoded item of a modality (its declared shape, no batch axis)."""


def modality_from_array(name: str, shape: Sequence[int]) -> Modality:
    """Guess a modality's kind from an array shape when a decoder returns one the cohort does not declare.

    Parameters
    ----------
    name
        The modality's name as the decoder returns it.
    shape
        Shape of one decoded item: ``(channels, samples)`` or ``(frames, height, width)``.

    Returns
    -------
    SignalModality or ImageSequenceModality
        With generic channel names and a unit sampling rate (axes then read in samples).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        channels = tuple(f"ch{i}" for i in range(shape[0]))
        return SignalModality(name, channels, n_samples=shape[1], sampling_rate_hz=1000.0, units="")
    if len(shape) == 3:
        return ImageSequenceModality(name, n_frames=shape[0], height=shape[1], width=shape[2], frame_interval_ms=1.0)
    raise ValueError(
        f"modality {name!r}: cannot infer a kind from item shape {shape}; expected (channels, samples) "
        "or (frames, height, width). Declare the modality in the bundle's manifest."
    )


def modality_spec(declared: Mapping[str, Modality], name: str, item: np.ndarray) -> Modality:
    """The declaration of a decoded modality (the cohort's ``modalities``), or one guessed from the item's shape.

    Parameters
    ----------
    declared
        The cohort's modalities by name.
    name
        The modality's name as the decoder returns it.
    item
        One decoded record (no batch axis).

    Returns
    -------
    SignalModality or ImageSequenceModality
        The declared one when its shape matches, else :func:`modality_from_array`'s guess.
    """
    found = declared.get(name)
    if found is not None and tuple(found.shape) == tuple(np.shape(item)):
        return found
    return modality_from_array(name, np.shape(item))


def _group_names(groups: Groups | hv.streams.Pipe, group_names: Sequence[str] | None) -> tuple[str, ...]:
    if group_names is not None:
        return tuple(group_names)
    if isinstance(groups, hv.streams.Pipe):
        raise ValueError("pass group_names when the data come through a Pipe, so the plot keeps one structure")
    return tuple(groups)


def _dynamic(
    build: Callable[[Groups, int], Any], groups: Groups | hv.streams.Pipe, frame: Any = None
) -> Any:
    """Call ``build`` once on static data, or wrap it in a DynamicMap over a Pipe and/or a frame reference."""
    streams: list[hv.streams.Stream] = []
    if isinstance(groups, hv.streams.Pipe):
        streams.append(groups)
    dynamic_frame = frame is not None and not isinstance(frame, (int, np.integer))
    if dynamic_frame:
        streams.extend(hv.streams.streams_list_from_dict({"frame": frame}))
    if not streams:
        return build(groups, int(frame or 0))
    static_data = None if isinstance(groups, hv.streams.Pipe) else groups
    static_frame = None if dynamic_frame else int(frame or 0)

    def callback(data: Groups | None = None, frame: int | None = None) -> Any:
        return build(static_data if static_data is not None else (data or {}), static_frame if frame is None else frame)

    # The elements built are framewise: each update brings its own ranges (a new selection).
    return hv.DynamicMap(callback, streams=streams)


# -- signal: channels × samples --------------------------------------------------------------
def _time_axis(modality: SignalModality) -> np.ndarray:
    return np.arange(modality.n_samples) * (1000.0 / modality.sampling_rate_hz)


def signal_grid_coordinates(
    item: np.ndarray, modality: SignalModality, *, cols: int, spread: float, gap: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Place every channel of one item in its cell of a grid drawn in a single plot.

    Channel ``c`` goes to row ``c // cols`` and column ``c % cols``: its time axis is shifted
    right by whole cell widths and its values down by whole rows, the way a 12-lead ECG is
    printed. Channels are joined into one path with NaN breaks.

    Parameters
    ----------
    item
        ``(channels, samples)`` values.
    modality
        The signal's declaration (sampling rate).
    cols
        Cells per row.
    spread
        Vertical distance between rows, in value units.
    gap
        Space between columns as a fraction of the cell's duration.

    Returns
    -------
    tuple of numpy.ndarray
        ``x`` (ms, shifted) and ``y`` (values, shifted), each ``channels × (samples + 1)`` long.
    """
    t = _time_axis(modality)
    width = (t[-1] if t.size else 0.0) * (1 + gap) or 1.0
    channels = np.arange(item.shape[0])
    x_shift = (channels % cols) * width
    y_shift = -(channels // cols) * spread
    xs = np.concatenate([np.append(t + dx, np.nan) for dx in x_shift])
    ys = np.concatenate([np.append(np.asarray(row, dtype=np.float64) + dy, np.nan) for row, dy in zip(item, y_shift)])
    return xs, ys


def _grid_overlay(
    groups: Groups, modality: SignalModality, names: Sequence[str], colors: Sequence[str], *,
    cols: int, width: int, height: int,
) -> hv.Overlay:
    n_channels = len(modality.channel_names)
    cols = max(1, min(cols, n_channels))
    rows = -(-n_channels // cols)
    items = [np.asarray(groups[name], dtype=np.float64) for name in names if groups.get(name) is not None]
    spread = max((float(np.nanmax(a) - np.nanmin(a)) for a in items if a.size), default=1.0) * 1.15 or 1.0
    t = _time_axis(modality)
    cell = (t[-1] if t.size else 0.0) * 1.1 or 1.0
    kdim = hv.Dimension("time", label="time in each cell", unit="ms")
    vdim = hv.Dimension(f"{modality.name}_value", label=modality.name, unit=modality.units or None)
    curves = []
    for i, name in enumerate(names):
        item = groups.get(name)
        if item is None:
            xs = ys = np.full(2, np.nan)
        else:
            xs, ys = signal_grid_coordinates(np.asarray(item), modality, cols=cols, spread=spread)
        curves.append(
            hv.Curve((xs, ys), kdim, vdim, label=name).opts(
                color=colors[i % len(colors)], line_width=1.4, framewise=True
            )
        )
    top = max((float(np.nanmax(a)) for a in items if a.size), default=1.0)
    labels = hv.Labels(
        (
            (np.arange(n_channels) % cols) * cell,
            -(np.arange(n_channels) // cols) * spread + top,
            list(modality.channel_names),
        ),
        [kdim, vdim],
        "channel",
    ).opts(text_align="left", text_baseline="top", text_font_size="9pt", text_color="#444444")
    stacked = cols == 1
    return hv.Overlay([*curves, labels]).opts(
        width=width * cols if not stacked else width,
        height=height * rows if not stacked else max(height, 22 * n_channels),
        yaxis=None, legend_position="top_right", toolbar="above", show_grid=True,
        title=f"{modality.name}: {n_channels} channels, two groups overlaid" if len(names) > 1 else modality.name,
    )


def _channel_overlay(
    groups: Groups, modality: SignalModality, channel: int, names: Sequence[str], colors: Sequence[str], *,
    width: int, height: int, legend: bool,
) -> hv.Overlay:
    t = _time_axis(modality)
    kdim = hv.Dimension("time", label="time", unit="ms")
    vdim = hv.Dimension(f"{modality.name}_value", label=modality.name, unit=modality.units or None)
    curves = []
    for i, name in enumerate(names):
        item = groups.get(name)
        y = np.asarray(item[channel], dtype=np.float64) if item is not None else np.full(t.shape, np.nan)
        curves.append(
            hv.Curve((t, y), kdim, vdim, label=name).opts(
                color=colors[i % len(colors)], line_width=1.5, framewise=True
            )
        )
    return hv.Overlay(curves).opts(
        title=modality.channel_names[channel], width=width, height=height, show_legend=legend,
        legend_position="top_right", toolbar=None,
    )


def create_signal_plot(
    groups: Groups | hv.streams.Pipe,
    modality: SignalModality,
    *,
    group_names: Sequence[str] | None = None,
    layout: Literal["grid", "stacked", "panels"] = "grid",
    cols: int = 4,
    colors: Sequence[str] = GROUP_COLORS,
    width: int = 200,
    height: int = 110,
) -> hv.Overlay | hv.Layout | hv.DynamicMap:
    """Channels of a signal modality, several groups overlaid in one colour each.

    Parameters
    ----------
    groups
        Group name → ``(channels, samples)`` array, or a :class:`holoviews.streams.Pipe` sending
        such mappings (then the plot is built once and only its data change).
    modality
        The signal's declaration: channel names, sampling rate, units.
    group_names
        The groups to draw, in colour order; required with a Pipe. A missing group draws nothing.
    layout
        ``"grid"``: one plot holding a grid of small per-channel traces, ``cols`` per row, the way
        a 12-lead ECG is printed; ``"stacked"``: the same with one column; ``"panels"``: one
        Bokeh figure per channel (shared axes, real time axis on each). The first two are one
        figure whatever the channel count: a new selection updates a 12-lead grid in ~20 ms,
        against ~150-400 ms for twelve figures.
    cols
        Cells per row of the grid (or columns of panels).
    colors
        Colours by group position.
    width, height
        Size of one channel's cell (or panel) in pixels.

    Returns
    -------
    holoviews.Overlay, holoviews.Layout or holoviews.DynamicMap
        One Overlay (grid, stacked), a Layout of per-channel Overlays (panels); DynamicMaps with a Pipe.
    """
    if modality.kind != "signal":
        raise ValueError(f"create_signal_plot needs a signal modality, got kind {modality.kind!r}")
    names = _group_names(groups, group_names)
    if layout in ("grid", "stacked"):
        n_cols = cols if layout == "grid" else 1
        return _dynamic(
            lambda data, _frame: _grid_overlay(data, modality, names, colors, cols=n_cols, width=width, height=height),
            groups,
        )
    if layout != "panels":
        raise ValueError(f"layout must be 'grid', 'stacked' or 'panels', got {layout!r}")
    panels = []
    for channel in range(len(modality.channel_names)):

        def build(data: Groups, _frame: int, channel: int = channel) -> hv.Overlay:
            return _channel_overlay(
                data, modality, channel, names, colors, width=width, height=height, legend=channel == 0
            )

        panels.append(_dynamic(build, groups))
    return hv.Layout(panels).cols(cols)


# -- image_sequence: frames × height × width -------------------------------------------------
def _image(frame: np.ndarray, modality: ImageSequenceModality, label: str, vdim: str) -> hv.Image:
    h, w = frame.shape
    return hv.Image(
        np.asarray(frame, dtype=np.float64)[::-1], bounds=(0, 0, w, h), kdims=["x", "y"], vdims=[vdim], label=label
    )


def create_image_sequence_plot(
    groups: Groups | hv.streams.Pipe,
    modality: ImageSequenceModality,
    *,
    frame: Any = 0,
    group_names: Sequence[str] | None = None,
    difference: bool = True,
    cmap: str = "gray",
    size: int = 220,
) -> hv.Layout:
    """The groups' image sequences side by side at one frame, plus their difference.

    Parameters
    ----------
    groups
        Group name → ``(frames, height, width)`` array, or a Pipe sending such mappings.
    modality
        The declaration: frame count, size, frame interval.
    frame
        Frame index, or a parameter reference (``player.param.value``) every panel follows, so
        one player drives the groups and the difference together.
    group_names
        Groups to draw, in order; required with a Pipe. The difference is the first minus the second.
    difference
        Add the difference of the first two groups (diverging colour map, range symmetric about zero
        and fixed over the frames so the colours do not jump while playing).
    cmap
        Colour map of the images; the groups share one range.
    size
        Width of each panel in pixels (height follows the aspect ratio).

    Returns
    -------
    holoviews.Layout
        Images (or DynamicMaps of them) for each group, then the difference.
    """
    if modality.kind != "image_sequence":
        raise ValueError(f"create_image_sequence_plot needs an image_sequence modality, got kind {modality.kind!r}")
    names = _group_names(groups, group_names)
    height = max(60, int(size * modality.height / max(modality.width, 1)))
    shape = modality.shape
    value = f"{modality.name}_intensity"

    def clip(f: int) -> int:
        return int(min(max(int(f), 0), shape[0] - 1))

    def build_group(name: str) -> Callable[[Groups, int], hv.Image]:
        def build(data: Groups, f: int) -> hv.Image:
            present = [np.asarray(data[n]) for n in names if data.get(n) is not None]
            lo, hi = (min(float(a.min()) for a in present), max(float(a.max()) for a in present)) if present else (0, 1)
            item = data.get(name)
            # Zeros, not NaN, for a missing group: an all-NaN image makes HoloViews warn on every frame.
            img = np.asarray(item[clip(f)]) if item is not None else np.zeros(shape[1:])
            return (
                _image(img, modality, name, value)
                .opts(
                    clim=(lo, hi if hi > lo else lo + 1), cmap=cmap, title=name, width=size, height=height,
                    xaxis=None, yaxis=None, colorbar=False, toolbar=None, framewise=True,
                )
            )

        return build

    panels = [_dynamic(build_group(name), groups, frame) for name in names]
    if difference and len(names) >= 2:
        first, second = names[0], names[1]
        diff_value = f"{modality.name}_difference"

        def build_difference(data: Groups, f: int) -> hv.Image:
            a, b = data.get(first), data.get(second)
            if a is None or b is None:
                diff = np.zeros(shape)
            else:
                diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
            m = float(np.nanmax(np.abs(diff))) if diff.size else 0.0
            m = m if m > 0 else 1.0
            return (
                _image(diff[clip(f)], modality, f"{first} − {second}", diff_value)
                .opts(
                    clim=(-m, m), cmap=DIFFERENCE_CMAP, title=f"{first} − {second}", width=size + 60,
                    height=height, xaxis=None, yaxis=None, colorbar=True, toolbar=None, framewise=True,
                )
            )

        panels.append(_dynamic(build_difference, groups, frame))
    return hv.Layout(panels).cols(len(panels))


# -- dispatch --------------------------------------------------------------------------------
def create_modality_plot(groups: Groups | hv.streams.Pipe, modality: Modality, **options: Any) -> Any:
    """Plot decoded items of any modality, choosing the factory by the modality's kind (never its name).

    Parameters
    ----------
    groups
        Group name → one item of the modality, or a Pipe sending such mappings.
    modality
        The modality's declaration; its ``kind`` picks the factory.
    **options
        Passed to :func:`create_signal_plot` or :func:`create_image_sequence_plot`; options the
        chosen factory does not take (``frame`` for signals, ``layout`` for images...) are dropped,
        so one call serves every kind.

    Returns
    -------
    holoviews object
        What the chosen factory returns.
    """
    factories = {"signal": create_signal_plot, "image_sequence": create_image_sequence_plot}
    factory = factories.get(modality.kind)
    if factory is None:
        raise ValueError(
            f"modality {modality.name!r} has kind {modality.kind!r}; the explorer draws "
            f"{' and '.join(map(repr, factories))} modalities."
        )
    accepted = inspect.signature(factory).parameters
    return factory(groups, modality, **{k: v for k, v in options.items() if k in accepted})
