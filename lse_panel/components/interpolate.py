"""The interpolation pane: decodes along the straight line between two groups' mean latents, and the path on the maps."""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping

import holoviews as hv
import numpy as np
import panel as pn
import param

from lse_panel.analysis.decode import Decoder
from lse_panel.analysis.groups import COMPARISON, SELECTION, GroupSet
from lse_panel.analysis.latent_paths import decode_path, interpolate, pca_params, pca_transform
from lse_panel.analysis.projection import Projector
from lse_panel.cohort.derived import neighbour_placer
from lse_panel.cohort.schema import ImageSequenceModality, Modality, SignalModality
from lse_panel.components.perturb import _LivePane
from lse_panel.components.state import ExplorerState
from lse_panel.components.text import alert, escape_html, escape_markdown, markdown
from lse_panel.palette import NEUTRAL_COLOUR
from lse_panel.plotting.paths import END_COLOUR, MONTAGE_GAP, colour_ramp, create_path_plot, image_montage, step_labels
from lse_panel.plotting.signals import create_modality_plot, modality_spec

ENDPOINTS = {"comparison → selection": "comparison", "two saved subgroups": "subgroups"}

SIGNAL_LAYOUTS = {"all channels, steps overlaid": "overlay", "one channel, a cell per step": "strip"}

PATH_NEIGHBOURS = 10
"""Subjects whose map positions place each step on a projection without a transform (see ``place_in_projection``)."""



class InterpolatePane(_LivePane):
    """Decodes at evenly spaced steps between two groups' mean latents, and the path drawn on the latent maps.

    The endpoints are the comparison group (start) and the selection (end), or any two saved
    subgroups. Each step's latent is decoded in one batch: signals as one grid with every step
    overlaid along a colour ramp (or one chosen channel with a cell per step), image sequences as a
    strip of one frame per step, left to right, in one plot (frame 0, end-diastole for cines that
    start there, by default).
    The mean latents are those of :attr:`ExplorerState.decode_from`.

    Drawing the path on a latent view (the Explorer's overlays wire this)::

        overlay = pane.create_path_overlay(view.key)      # e.g. "fused/umap"
        view.show(view.plot * overlay)

    The overlay is a ``DynamicMap`` fed by a ``Pipe`` the pane refreshes on every new path; build a
    new one when the view switches projection. On a projection of another latent kind than
    ``decode_from``, the path shown is the same two groups' interpolation in that kind's latents.
    Positions come from :meth:`path_coords`: a projector's ``transform`` when one is given for
    the key; exact for a PCA projection whose manifest entry records ``mean`` and ``components``; else the distance-weighted mean of the map positions of
    each step's nearest subjects in latent space (see ``place_in_projection``).

    Parameters
    ----------
    state
        The session's :class:`ExplorerState`: its groups, ``decode_from`` and saved subgroups
        (offered as endpoints).
    decode
        A :class:`~lse_panel.analysis.decode.Decoder`.
    projectors
        Projection key → a fitted projector with ``transform`` (e.g. the parametric-UMAP network
        ``lse build`` trains above 60k subjects, or a ``LinearProjector``); used first by
        :meth:`path_coords` for that projection.
    **params
        Initial values of the params below.
    """

    endpoints = param.Selector(
        default="comparison", objects=ENDPOINTS,
        doc="Interpolate from the comparison group to the selection, or between two saved subgroups.",
    )
    start = param.Selector(default=None, objects=[], allow_None=True, doc="Saved subgroup at the path's start.")
    end = param.Selector(default=None, objects=[], allow_None=True, doc="Saved subgroup at the path's end.")
    steps = param.Integer(default=8, bounds=(2, 20), doc="Decoded steps, both endpoints included.")
    signal_layout = param.Selector(
        default="overlay", objects=SIGNAL_LAYOUTS,
        doc="Signals: every channel with the steps overlaid along a colour ramp, or one channel with a cell per step.",
    )
    channel = param.Selector(default=None, objects=[], allow_None=True, doc="The channel shown in the strip layout.")
    frame = param.Integer(
        default=0, bounds=(0, None), doc="Frame of image sequences shown per step (0: end-diastole for cines starting there).",
    )
    latents = param.Array(default=None, allow_None=True, constant=True, doc="The path's latents (steps, d); None when undefined.")
    decoded = param.Dict(default={}, constant=True, doc="Decoded path: {modality: (steps, *shape)}; empty when hidden.")
    labels = param.List(default=[], constant=True, doc="The steps' names, start first.")

    def __init__(
        self,
        state: ExplorerState,
        decode: Decoder,
        *,
        projectors: Mapping[str, Projector] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(state=state, **params)
        self._decode = decode
        self.store = state.store
        self._endpoint_cache: tuple[tuple[Any, ...], GroupSet] | None = None
        self.projectors = dict(projectors or {})
        self._plot_key: tuple | None = None
        self._specs: dict[str, Modality] = {}
        self._pipes: dict[str, hv.streams.Pipe] = {}
        self._path_pipes: dict[str, list[hv.streams.Pipe]] = {}
        self.refresh_subgroups()

        self._endpoint_widget = pn.widgets.RadioButtonGroup.from_param(
            self.param.endpoints, color="primary", variant="outline"
        )
        self._start_widget = pn.widgets.Select.from_param(self.param.start, label="From", width=180)
        self._end_widget = pn.widgets.Select.from_param(self.param.end, label="To", width=180)
        self._refresh = pn.widgets.Button(label="↻ subgroups", color="light", width=110, align="end")
        self._refresh.on_click(self._on_refresh)
        self._steps_widget = pn.widgets.IntSlider.from_param(self.param.steps, label="Steps", width=200)
        self._layout_widget = pn.widgets.Select.from_param(self.param.signal_layout, label="Signals", width=240)
        self._channel_widget = pn.widgets.Select.from_param(self.param.channel, label="Channel", width=120)
        self._frame_widget = pn.widgets.IntInput.from_param(self.param.frame, label="Image frame", width=100)
        self._subgroup_row = pn.Row(self._start_widget, self._end_widget, self._refresh)
        self._header = markdown("", margin=(0, 10))
        self._alert = alert("", alert_type="info", visible=False)
        self._plots = pn.Column(sizing_mode="stretch_width")
        self._layout = pn.Column(
            self._endpoint_widget,
            self._subgroup_row,
            pn.Row(self._steps_widget, self._layout_widget, self._channel_widget, self._frame_widget),
            self._header,
            self._alert,
            self._plots,
            sizing_mode="stretch_width",
        )
        self._sync_widgets()
        state.param.watch(self._on_groups_change, ["groups", "decode_from"])
        self.param.watch(self._on_groups_change, ["endpoints", "start", "end", "steps"])
        self.param.watch(self._on_display_change, ["signal_layout", "channel"])
        self._update()

    # -- endpoints -----------------------------------------------------------------------------
    def refresh_subgroups(self) -> list[str]:
        """Re-read the saved subgroups (another session may have saved one) and offer them as endpoints.

        Returns
        -------
        list of str
            The names now offered.
        """
        names = self.store.names()
        # Decided before the objects change: a linked Select resets its value to the first option.
        start = self.start if self.start in names else (names[0] if names else None)
        end = self.end if self.end in names else (names[1] if len(names) > 1 else start)
        # Not batched: the widgets must see the new options before the values they are to show.
        self.param.start.objects = names
        self.param.end.objects = names
        self.param.update(start=start, end=end)
        return names

    def endpoint_names(self) -> tuple[str, str]:
        """Names of the start and end groups, as the steps' labels show them."""
        if self.endpoints == "comparison":
            return str(self.state.comparison), "selection"
        return str(self.start), str(self.end)

    def endpoint_groups(self) -> tuple[GroupSet, str, str]:
        """The groups holding the path's start and end, and their labels in it.

        Comparison → selection: the session's groups. Two saved subgroups: the session's groups
        with the two added (their privacy verdicts and latent sums computed once per change).
        """
        groups = self.state.groups
        if self.endpoints == "comparison":
            return groups, COMPARISON, SELECTION
        start, end = f"start ({self.start})", f"end ({self.end})"
        key = (groups, self.start, self.end, self.store.version())
        if self._endpoint_cache is None or self._endpoint_cache[0] != key:
            members = {start: self._members(self.start), end: self._members(self.end)}
            self._endpoint_cache = (key, groups.including(members))
        return self._endpoint_cache[1], start, end

    def endpoint_sizes(self) -> tuple[int, int]:
        """Subjects in the start and end groups (no latents gathered)."""
        if self.endpoints == "subgroups" and (self.start is None or self.end is None or self.start == self.end):
            return tuple(int(len(self._members(name))) for name in (self.start, self.end))  # type: ignore[return-value]
        groups, start, end = self.endpoint_groups()
        return groups.size(start), groups.size(end)

    def _members(self, name: str | None) -> np.ndarray:
        return np.empty(0, np.int64) if name is None else self.state.backend.subgroup(self.store, name)

    def endpoint_means(self, kind: str | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Mean latents of the start and end groups in latent ``kind`` (default ``decode_from``); ``None`` if empty."""
        kind = kind or self.state.decode_from
        groups, start, end = self.endpoint_groups()
        return groups.mean_latent(start, kind), groups.mean_latent(end, kind)

    def path_latents(self, kind: str | None = None) -> np.ndarray | None:
        """The path's ``(steps, d)`` latents in latent ``kind``; ``None`` when it may not or cannot be shown."""
        if self._hidden_reason() is not None:
            return None
        a, b = self.endpoint_means(kind)
        if a is None or b is None:
            return None
        return interpolate(a, b, self.steps)

    def _hidden_reason(self) -> str | None:
        start, end = self.endpoint_names()
        if self.endpoints == "subgroups":
            if self.start is None or self.end is None:
                return (
                    "No saved subgroups to interpolate between. Save two subgroups (or press ↻ after "
                    "saving them in another session), or interpolate from the comparison group to the selection."
                )
            if self.start == self.end:
                return f"The start and end are the same subgroup ({self.start}); choose two different ones."
        groups, start_label, end_label = self.endpoint_groups()
        n_start, n_end = groups.size(start_label), groups.size(end_label)
        if self.endpoints == "comparison" and n_end == 0:
            return "No subjects selected. Draw a box or lasso on a latent view to interpolate from the comparison group to it."
        if self.endpoints == "comparison" and n_start == 0:
            return "The comparison group is empty: every subject is selected. Compare with the whole cohort instead."
        reason = self._privacy_reason(groups, (start_label, end_label))
        return None if reason is None else f"Nothing decoded. {reason}."

    # -- the path on a map -----------------------------------------------------------------------
    def path_coords(self, projection_key: str) -> np.ndarray | None:
        """The steps' positions on projection ``"<kind>/<method>"``, ``(steps, 2)``; ``None`` when hidden.

        In order of preference: the projector given for this key (its ``transform``); the exact
        linear map of a PCA projection whose manifest entry records ``mean`` and ``components``;
        else (a UMAP stored without its model) each step is placed at the distance-weighted mean
        of the map positions of its :data:`PATH_NEIGHBOURS` nearest subjects, in latent space,
        among a fixed sample (``place_in_projection``; the sample is gathered once per process).
        """
        kind = projection_key.split("/", 1)[0]
        latents = self.path_latents(kind)
        if latents is None:
            return None
        projector = self.projectors.get(projection_key)
        if projector is not None:
            return np.asarray(projector.transform(latents.astype(np.float32)), dtype=np.float64)
        cohort = self.state.cohort
        params = pca_params((cohort.manifest.get("projections") or {}).get(projection_key))
        if params is not None:
            return pca_transform(latents, params)
        return neighbour_placer(cohort, projection_key).place(latents, k=PATH_NEIGHBOURS)

    def create_path_overlay(self, projection_key: str, *, x: str = "x", y: str = "y") -> hv.DynamicMap:
        """A ``DynamicMap`` of the path on projection ``projection_key``, to overlay on its latent view.

        Fed by an ``hv.streams.Pipe`` the pane sends new coordinates to whenever the path changes
        (empty when it is hidden). Overlay it on the view's plot: ``view.plot * overlay``.

        Parameters
        ----------
        projection_key
            ``"<latent kind>/<method>"`` of the view, e.g. ``"fused/umap"``.
        x, y
            The view's coordinate dimension names.

        Returns
        -------
        holoviews.DynamicMap
            Of :func:`create_path_plot` overlays.
        """
        pipe = hv.streams.Pipe(data=self._path_data(projection_key))
        self._path_pipes.setdefault(projection_key, []).append(pipe)
        return hv.DynamicMap(lambda data: create_path_plot(data, x=x, y=y), streams=[pipe])

    def _path_data(self, projection_key: str) -> dict[str, Any] | None:
        coords = self.path_coords(projection_key)
        return None if coords is None else {"coords": coords, "labels": list(self.labels)}

    def _send_paths(self) -> None:
        for key, pipes in self._path_pipes.items():
            data = self._path_data(key)
            for pipe in pipes:
                pipe.send(data)

    # -- events --------------------------------------------------------------------------------
    def _on_refresh(self, *_: Any) -> None:
        self.refresh_subgroups()

    def _on_groups_change(self, *events: param.parameterized.Event) -> None:
        if any(e.name == "endpoints" for e in events):
            if self.endpoints == "subgroups":
                self.refresh_subgroups()
            self._sync_widgets()
        self._schedule("path", self._plots, self._update)

    def _on_display_change(self, *events: param.parameterized.Event) -> None:
        self._sync_widgets()
        self._schedule("display", self._plots, self._show)

    def _sync_widgets(self) -> None:
        self._subgroup_row.visible = self.endpoints == "subgroups"
        self._channel_widget.visible = self.signal_layout == "strip"

    # -- computing -------------------------------------------------------------------------------
    def _update(self) -> None:
        reason = self._hidden_reason()
        start, end = self.endpoint_names()
        if reason is not None:
            self._set(latents=None, decoded={}, labels=[], message=reason)
            self._header.object = ""
            self._alert.object = escape_markdown(reason)
            self._alert.visible = True
            self._plots.visible = False
            self._send_paths()
            return
        path = self.path_latents()
        labels = step_labels(self.steps, start, end)
        decoded = decode_path(self._decode, path, self.state.decode_from)
        self._set(latents=path, decoded=decoded, labels=labels, message="")
        n_start, n_end = self.endpoint_sizes()
        count = partial(self.state.policy.count_text, total=self.state.cohort.n_subjects)
        self._header.object = (
            f"**{self.steps} steps** on the straight line from the mean **{self.state.decode_from}** latent of "
            f"**{escape_markdown(start)}** ({count(n_start)} subjects, blue) to that of **{escape_markdown(end)}** ({count(n_end)}, red)."
        )
        self._alert.visible = False
        self._show()
        self._send_paths()

    def _show(self) -> None:
        decoded = self.decoded
        if not decoded:
            return
        specs = {name: modality_spec(self.state.cohort.modalities, name, values[0]) for name, values in decoded.items()}
        self._sync_channels(specs)
        self._ensure_plots(specs)
        for name, spec in specs.items():
            self._pipes[name].send(self._groups(name, spec, decoded[name]))
        self._plots.visible = True

    def _sync_channels(self, specs: Mapping[str, Modality]) -> None:
        names: list[str] = []
        for spec in specs.values():
            if isinstance(spec, SignalModality):
                names += [c for c in spec.channel_names if c not in names]
        if names != list(self.param.channel.objects):
            self.param.channel.objects = names
            if self.channel not in names:
                with param.discard_events(self):
                    self.channel = names[min(1, len(names) - 1)] if names else None  # lead II if it is an ECG

    def _channel_index(self, spec: SignalModality) -> int:
        names = list(spec.channel_names)
        return names.index(self.channel) if self.channel in names else 0

    def _strip_spec(self, spec: SignalModality) -> SignalModality:
        channel = spec.channel_names[self._channel_index(spec)]
        return SignalModality(
            f"{spec.name} {channel}", tuple(self.labels), n_samples=spec.n_samples,
            sampling_rate_hz=spec.sampling_rate_hz, units=spec.units,
        )

    def _groups(self, name: str, spec: Modality, values: np.ndarray) -> dict[str, np.ndarray]:
        if isinstance(spec, SignalModality) and self.signal_layout == "strip":
            strip = np.asarray(values)[:, self._channel_index(spec)]
            return {"path": strip, "start": np.broadcast_to(strip[0], strip.shape)}
        if isinstance(spec, ImageSequenceModality):
            return {"path": image_montage(values)}
        return {label: values[i] for i, label in enumerate(self.labels)}

    def _montage_spec(self, spec: ImageSequenceModality) -> ImageSequenceModality:
        steps = len(self.labels)
        return ImageSequenceModality(
            spec.name, spec.n_frames, spec.height, steps * spec.width + (steps - 1) * MONTAGE_GAP,
            spec.frame_interval_ms, units=spec.units,
        )

    def _ensure_plots(self, specs: dict[str, Modality]) -> None:
        key = (tuple(specs.items()), tuple(self.labels), self.signal_layout, self.channel)
        if key == self._plot_key:
            return
        self._plot_key, self._specs = key, specs
        self._pipes = {name: hv.streams.Pipe(data={}) for name in specs}
        labels = list(self.labels)
        ramp = colour_ramp(len(labels))
        cards = []
        for name, spec in specs.items():
            pipe = self._pipes[name]
            if isinstance(spec, SignalModality) and self.signal_layout == "strip":
                strip = self._strip_spec(spec)
                plot = create_modality_plot(
                    pipe, strip, group_names=("path", "start"), colors=(END_COLOUR, NEUTRAL_COLOUR),
                    layout="grid", cols=min(len(labels), 5), width=150, height=90,
                )
                title = f"{name}: channel {strip.name.split(' ', 1)[1]}, one cell per step (grey: the start)"
            elif isinstance(spec, SignalModality):
                plot = create_modality_plot(pipe, spec, group_names=labels, colors=ramp, layout="grid")
                title = f"{name}: every channel, the {len(labels)} steps overlaid (blue: start → red: end)"
            else:
                montage = self._montage_spec(spec)
                plot = create_modality_plot(
                    pipe, montage, group_names=("path",), frame=self.param.frame, difference=False,
                    size=min(len(labels) * (110 if len(labels) <= 10 else 80), 1600),
                )
                title = f"{name}: frame {self.frame} of each step, left to right: {labels[0]} → {labels[-1]}"
            # A Card writes its title into the page as HTML: the labels hold subgroup names.
            cards.append(pn.Card(plot, title=escape_html(title), sizing_mode="stretch_width"))
        self._plots.objects = cards
