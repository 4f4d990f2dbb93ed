"""The latent-plot factories build the intended HoloViews pipelines (asserted on elements, not pixels)."""

from __future__ import annotations

import datashader as ds
import holoviews as hv
import numpy as np
import pandas as pd
import pytest
from holoviews.operation.datashader import rasterize

from lse_panel.analysis.histograms import bin_phenotype
from lse_panel.plotting.latent import (
    color_mode,
    create_distribution_plot,
    create_latent_plot,
    data_extent,
    highlight_image,
    points_frame,
    rasterize_points,
    selection_frame,
)
from lse_panel.testing import tiny_cohort


@pytest.fixture(scope="module")
def cohort():
    return tiny_cohort(300)


def _frame(cohort, color_by=None):
    spec = cohort.phenotype_specs.get(color_by) if color_by else None
    values = cohort.phenotype(color_by) if color_by else None
    return points_frame(cohort.projection("ecg/umap"), values, name=color_by, spec=spec), spec


def test_points_frame_shares_memory_and_makes_categoricals(cohort) -> None:
    coords = cohort.projection("ecg/umap")
    frame, _ = _frame(cohort, "sex")
    assert np.shares_memory(frame["x"].to_numpy(), coords)
    assert isinstance(frame["sex"].dtype, pd.CategoricalDtype)
    assert list(frame["sex"].cat.categories) == ["female", "male"]


@pytest.mark.parametrize(("color_by", "element", "vdims"), [
    (None, hv.Image, None), ("age", hv.Image, ["age", "count"]), ("sex", hv.ImageStack, ["female", "male"]),
])
def test_latent_plot_is_a_rasterize_pipeline(cohort, color_by, element, vdims) -> None:
    frame, spec = _frame(cohort, color_by)
    pipe = hv.streams.Pipe(data=None)
    plot = create_latent_plot(frame, color_by=color_by, spec=spec, selection=pipe)
    assert isinstance(plot, hv.DynamicMap)
    overlay = plot[()]
    base, highlight = overlay.get(0), overlay.get(1)
    assert isinstance(base, element)
    if vdims:
        # Continuous: the mean comes first (it is what gets coloured), the count is for hover.
        assert [d.name for d in base.vdims] == vdims
    assert base.pipeline.find(rasterize) is not None
    assert int(np.nansum(base.dimension_values(base.vdims[0] if color_by != "sex" else 2))) >= 0
    assert isinstance(highlight, hv.Image)
    assert np.nansum(highlight.dimension_values(2)) == 0  # nothing selected yet
    pipe.send(selection_frame(frame, np.arange(25)))
    assert np.nansum(plot[()].get(1).dimension_values(2)) > 0


def test_density_counts_every_subject(cohort) -> None:
    frame, _ = _frame(cohort)
    image = create_latent_plot(frame)[()]
    assert np.nansum(image.dimension_values(2)) == cohort.n_subjects


def test_streams_are_sourced_on_the_base_raster(cohort) -> None:
    frame, _ = _frame(cohort)
    lasso, box = hv.streams.Lasso(), hv.streams.BoundsXY()
    plot = create_latent_plot(frame, selection=hv.streams.Pipe(data=None), streams=[lasso, box])
    assert lasso.source is not None and lasso.source is not plot
    assert box.source is lasso.source


def _uniform_frame(n: int = 200_000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return points_frame(rng.uniform(-1, 1, size=(n, 2)).astype(np.float32))


def _image_data(plot, layer: int) -> dict:
    source = list(plot.subplots.values())[layer].handles["source"].data
    return {k: v[0] for k, v in source.items()}


def test_highlight_lines_up_with_the_base_and_counts_the_same_points() -> None:
    frame = _uniform_frame()
    pipe = hv.streams.Pipe(data=None)
    plot = hv.renderer("bokeh").get_plot(create_latent_plot(frame, selection=pipe))
    pipe.send(selection_frame(frame, np.arange(len(frame))))
    for _ in range(2):
        base, high = _image_data(plot, 0), _image_data(plot, 1)
        for key in ("x", "y", "dw", "dh"):
            assert high[key] == pytest.approx(base[key])
        assert high["image"].shape == base["image"].shape
        # Every subject selected and the raster dense (so not spread): the same counts per pixel.
        np.testing.assert_array_equal(np.nan_to_num(high["image"]), np.nan_to_num(base["image"]))
        # Pan, zoom and resize: both layers re-aggregate on the new grid.
        streams = [s for s in plot.streams if isinstance(s, (hv.streams.RangeXY, hv.streams.PlotSize))]
        for s in streams:
            if isinstance(s, hv.streams.RangeXY):
                s.update(x_range=(-0.5, 0.7), y_range=(-0.4, 0.3))
            else:
                s.update(width=300, height=250)
        hv.streams.Stream.trigger(streams)
    assert _image_data(plot, 1)["image"].shape == (250, 300)


def test_highlight_spreads_only_sparse_selections() -> None:
    frame = _uniform_frame()
    grid = dict(x="x", y="y", x_range=(-1.0, 1.0), y_range=(-1.0, 1.0), width=200, height=150)
    few = highlight_image(selection_frame(frame, np.arange(20)), **grid)
    assert np.nansum(few.dimension_values(2)) > 20  # spread, so each subject covers several pixels
    many = highlight_image(frame, **grid)
    assert np.nansum(many.dimension_values(2)) == len(frame)
    empty = highlight_image(None, **grid)
    assert np.isnan(empty.dimension_values(2)).all()


def test_a_selection_redraws_the_highlight_only() -> None:
    frame = _uniform_frame(50_000)
    pipe = hv.streams.Pipe(data=selection_frame(frame, np.arange(100)))
    plot = hv.renderer("bokeh").get_plot(create_latent_plot(frame, selection=pipe))
    base_image, high_image = _image_data(plot, 0)["image"], _image_data(plot, 1)["image"]
    pipe.send(selection_frame(frame, np.arange(0, 50_000, 2)))
    assert _image_data(plot, 0)["image"] is base_image  # not re-aggregated, not resent to the browser
    assert np.nansum(_image_data(plot, 1)["image"]) > np.nansum(high_image)


@pytest.mark.parametrize("aggregator", [ds.count(), ds.mean("age")])
def test_rasterize_points_matches_rasterize(cohort, aggregator) -> None:
    frame, _ = _frame(cohort, "age")
    points = hv.Points(frame, ["x", "y"], ["age"])
    options = dict(aggregator=aggregator, width=80, height=60, dynamic=False, x_range=(-5, 5), y_range=(-4, 6))
    ours, stock = rasterize_points(points, **options), rasterize(points, **options)
    assert ours.vdims == stock.vdims and ours.bounds.lbrt() == stock.bounds.lbrt()
    np.testing.assert_array_equal(ours.dimension_values(2), stock.dimension_values(2))


def test_color_mode(cohort) -> None:
    specs = cohort.phenotype_specs
    assert color_mode(None) == "density"
    assert color_mode(specs["age"]) == "continuous"
    assert color_mode(specs["af"]) == "categorical"


def test_data_extent_pads_and_handles_degenerate_axes() -> None:
    (x0, x1), (y0, y1) = data_extent(np.array([[0, 1], [10, 1]], dtype=np.float32))
    assert x0 < 0 < 10 < x1
    assert y0 < 1 < y1


def test_distribution_plots(cohort) -> None:
    binning = bin_phenotype(cohort.phenotype("age"), "continuous")
    plot = create_distribution_plot("age", cohort.phenotype_specs["age"], binning.edges, binning.cohort_counts,
                                    binning.counts(np.arange(10)), selected_range=(50.0, 60.0))
    assert isinstance(plot, hv.Overlay) and len(plot) == 3
    hv.render(plot)
    bars = create_distribution_plot("sex", cohort.phenotype_specs["sex"], ["female", "male"],
                                    np.array([3, 5]), np.array([0, 0]))
    assert isinstance(bars, hv.Bars)
    np.testing.assert_allclose(bars.dimension_values(2)[:2], [3 / 8, 5 / 8])
    hv.render(bars)
