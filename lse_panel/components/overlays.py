"""What is drawn over the latent views: the shown subgroups' members, the interpolation path, other panes' layers."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping

import holoviews as hv
import numpy as np
import pandas as pd
import param

from lse_panel.analysis.privacy import dense_cell_centres
from lse_panel.components.latent_view import LatentView
from lse_panel.components.subgroups import SubgroupManager
from lse_panel.plotting.latent import create_subgroup_points

__all__ = ["MAX_OVERLAY_POINTS", "LatentOverlays"]

MAX_OVERLAY_POINTS = 2_000

MAX_CELL_MEMBERS = 200_000
"""Members binned into map cells per shown subgroup in aggregate mode (a sample beyond that)."""
"""Most subjects of each shown subgroup drawn as points on a latent view (a reproducible sample)."""


class LatentOverlays:
    """The shown subgroups and the interpolation path drawn over each latent view.

    Each view draws ``plot * subgroup points * path`` through its public
    :meth:`~lse_panel.components.latent_view.LatentView.overlay_with`, and recomposes it itself
    whenever it rebuilds its plot (new projection, latent kind or colouring). Subgroup points are
    a capped sample per subgroup (:data:`MAX_OVERLAY_POINTS`), so a large subgroup costs no more
    than a small one to draw.

    Parameters
    ----------
    views
        Name → latent view.
    subgroups
        The subgroup manager whose ``shown`` subgroups are drawn.
    path_overlay
        Projection key → a ``DynamicMap`` of the interpolation path on it (the interpolation pane's
        ``create_path_overlay``); ``None`` draws no path.
    """

    def __init__(
        self,
        views: Mapping[str, LatentView],
        subgroups: SubgroupManager,
        path_overlay: Callable[[str], hv.DynamicMap] | None = None,
    ) -> None:
        self.views = dict(views)
        self.subgroups = subgroups
        self._path_overlay = path_overlay
        self.pipes = {name: hv.streams.Pipe(data=None) for name in self.views}
        self._points = {name: hv.DynamicMap(create_subgroup_points, streams=[pipe]) for name, pipe in self.pipes.items()}
        # One path overlay per projection, reused: the interpolation pane keeps feeding every one it made.
        self._paths: dict[str, hv.DynamicMap] = {}
        self._extra: list[tuple[Callable[[str], hv.DynamicMap], dict[str, hv.DynamicMap]]] = []
        for name, view in self.views.items():
            view.overlay_with(partial(self._layers, name))
            view.param.watch(partial(self._on_view_change, name), ["kind", "method"])
        subgroups.param.watch(self._on_shown, "shown")
        self.refresh()

    def subgroup_frame(self, name: str) -> pd.DataFrame:
        """The points drawn for the shown subgroups on view ``name``'s current projection."""
        view = self.views[name]
        coords = view.coords
        policy = self.subgroups.policy
        parts = []
        backend = self.subgroups.state.backend
        for group, (colour, members) in self.subgroups.shown_members().items():
            if policy.individual_views:
                xy = np.asarray(coords[backend.sample(members, MAX_OVERLAY_POINTS)], dtype=np.float64).reshape(-1, 2)
                x, y = xy[:, 0], xy[:, 1]
            else:
                # Aggregate mode: a mark per map cell holding at least the floor's members, none per subject.
                # A sample can only under-count a cell, so no mark ever stands for fewer than k subjects.
                xy = np.asarray(coords[backend.sample(members, MAX_CELL_MEMBERS)], dtype=np.float64).reshape(-1, 2)
                x, y = dense_cell_centres(xy[:, 0], xy[:, 1], backend.extent(view.key), min_count=policy.min_group_size)
            parts.append(pd.DataFrame({"x": x, "y": y, "subgroup": group, "colour": colour}))
        return pd.concat(parts, ignore_index=True) if parts else create_subgroup_points().data

    def refresh(self) -> None:
        """Send every view the shown subgroups' points on its current projection."""
        for name in self.views:
            self.pipes[name].send(self.subgroup_frame(name))

    def add_layer(self, layer: Callable[[str], hv.DynamicMap]) -> None:
        """Also draw ``layer(key)`` over every view, on top, now and whenever a view rebuilds its plot.

        ``layer`` is called once per projection key (e.g. the failures pane's ``region_overlay``);
        the ``DynamicMap`` it returns is reused whenever that projection is shown again.
        """
        self._extra.append((layer, {}))
        for name, view in self.views.items():
            view.overlay_with(partial(self._layers, name))

    def _layers(self, name: str, key: str) -> list[Any]:
        layers: list[Any] = [self._points[name]]
        if self._path_overlay is not None:
            if key not in self._paths:
                self._paths[key] = self._path_overlay(key)
            layers.append(self._paths[key])
        for layer, made in self._extra:
            if key not in made:
                made[key] = layer(key)
            layers.append(made[key])
        return layers

    def _on_view_change(self, name: str, *_: Any) -> None:
        # The view has rebuilt its plot on the new projection (its own watcher ran first).
        self.pipes[name].send(self.subgroup_frame(name))

    def _on_shown(self, _: param.parameterized.Event) -> None:
        self.refresh()
