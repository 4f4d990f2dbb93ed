"""Overlays on the latent views: the shown subgroups' members and the interpolation path, on every projection."""

from __future__ import annotations

import holoviews as hv
import numpy as np

from lse_panel.components.explorer import Explorer
from lse_panel.components.overlays import MAX_OVERLAY_POINTS
from lse_panel.testing import tiny_cohort, tiny_decoder


def _built_on(composed: hv.DynamicMap, plot: hv.DynamicMap) -> bool:
    """Whether ``plot`` is one of the layers ``composed`` overlays (at any depth of ``*``)."""
    inputs = getattr(composed.callback, "inputs", [])
    return any(layer is plot or _built_on(layer, plot) for layer in inputs)


def test_shown_subgroups_and_the_path_are_drawn_on_every_view() -> None:
    cohort = tiny_cohort(3_000)
    explorer = Explorer(cohort, tiny_decoder(8))
    explorer.select(indices=np.arange(0, 3_000, 1))
    explorer.save_subgroup("everyone", "#ff0000")
    explorer.select(indices=np.arange(50))
    explorer.save_subgroup("first", "#00ff00")
    overlays = explorer.overlays
    for name in explorer.latent_view.views:
        assert overlays.pipes[name].data.empty
    explorer.subgroups.shown = ["everyone", "first"]
    for name, view in explorer.latent_view.views.items():
        data = overlays.pipes[name].data
        counts = data["subgroup"].value_counts()
        assert counts["everyone"] == MAX_OVERLAY_POINTS and counts["first"] == 50  # a capped sample
        assert set(data.loc[data["subgroup"] == "first", "colour"]) == {"#00ff00"}
        np.testing.assert_allclose(data.loc[data["subgroup"] == "first", ["x", "y"]], view.coords[:50], rtol=1e-6)
        composed = view.shown
        assert composed is not view.plot and _built_on(composed, view.plot)
        assert isinstance(composed[()], hv.Overlay)
        assert len(composed[()]) >= 3  # the raster layers, the subgroup points, the path
    # A new projection: the pane shows the new plot with the overlays rebuilt on it.
    view_name, view = next(iter(explorer.latent_view.views.items()))
    explorer.latent_view.method = "pca"
    assert view.key.endswith("/pca")
    first = overlays.pipes[view_name].data
    np.testing.assert_allclose(first.loc[first["subgroup"] == "first", ["x", "y"]], view.coords[:50], rtol=1e-6)
    assert _built_on(view.shown, view.plot) and len(view.shown[()]) >= 3
    # The path follows the interpolation pane, on this projection.
    explorer.state.comparison = "everyone"
    explorer.select(indices=np.arange(100, 200))
    coords = explorer.interpolate_pane.path_coords(view.key)
    assert coords is not None and len(coords) == explorer.interpolate_pane.steps
    (path,) = [el for el in view.shown[()] if isinstance(el, hv.Path) and el.data]  # (not the empty region outline)
    np.testing.assert_allclose(path.array(["x", "y"]), coords)
    # Box, lasso and tap still reach the raster under the overlays.
    plot = hv.renderer("bokeh").get_plot(view.shown)
    callbacks = {type(cb).__name__ for p in plot.traverse(lambda p: p) for cb in getattr(p, "callbacks", [])}
    assert {"BoundsCallback", "LassoCallback", "TapCallback"} <= callbacks
    explorer.subgroups.shown = []
    assert overlays.pipes[view_name].data.empty
