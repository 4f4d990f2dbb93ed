"""Datashaded latent-space plots: density, continuous or categorical colouring, and a selection highlight."""

from __future__ import annotations

from typing import Literal, Sequence

import datashader as ds
import datashader.transfer_functions as tf
import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh options the factories set)
import numpy as np
import pandas as pd
from bokeh.palettes import interp_palette
from holoviews.operation.datashader import aggregate, rasterize

from lse_panel.cohort.backend import data_extent, points_frame, selection_frame
from lse_panel.cohort.dask_backend import ClusterPoints
from lse_panel.cohort.schema import PhenotypeSpec
from lse_panel.palette import CATEGORY_COLORS, COHORT_COLOUR, HIGHLIGHT

# Bokeh is this package's only backend; outside a notebook nothing else selects it, and
# ``hv.opts.<Element>`` lookups need a current backend.
hv.Store.set_current_backend("bokeh")

ColorMode = Literal["density", "continuous", "categorical"]

DENSITY = "density"
"""The ``color_by`` value meaning: colour each pixel by how many subjects fall in it."""

DENSITY_CMAP = list(interp_palette(("#e3e9f0", "#9fb3c8", "#5f7f9f", "#2f4f6f", "#0b1d30"), 256))
"""Light-to-dark slate blue: quiet enough for the highlight to stand out on top of it."""

CONTINUOUS_CMAP = "viridis"



def color_mode(spec: PhenotypeSpec | None) -> ColorMode:
    """How a phenotype colours the raster: ``None`` → density, else by its type."""
    if spec is None:
        return "density"
    return "continuous" if spec.type == "continuous" else "categorical"


class rasterize_points(rasterize):
    """``rasterize`` for a pandas-backed ``hv.Points``: the same ``aggregate`` step, without the rest.

    ``rasterize`` tries each of its ~20 element transforms on every call (one parameterised
    operation instance each), about 4 ms of a 12 ms re-rasterise at 500k points; here only the one
    a ``Points`` element takes is tried (bench_explorer.py). A subclass, so pipelines still
    ``find(rasterize)``.
    """

    _transforms = [(hv.Points, aggregate)]


def _aggregator(mode: ColorMode, color_by: str | None) -> ds.reductions.Reduction:
    if mode == "density":
        return ds.count()
    if mode == "continuous":
        # Both reductions in one pass so hover shows the pixel's count next to its mean.
        return ds.summary(count=ds.count(), **{color_by: ds.mean(color_by)})
    return ds.by(color_by, ds.count())


def _ignore_bokeh_selection(plot: object, element: object) -> None:
    """Draw the raster the same whether Bokeh deems its pixels selected or not.

    Bokeh hit-tests the image under a box or lasso and would fade (or blank) pixels by its own
    notion of selection; the selection here is exact and drawn by the highlight layer instead.
    """
    renderer = plot.handles.get("glyph_renderer")
    if renderer is not None:
        renderer.selection_glyph = renderer.glyph
        renderer.nonselection_glyph = renderer.glyph


def _value_first(image: hv.Image, value: str) -> hv.Image:
    # ds.summary orders its outputs by name; Bokeh colours the first value dimension.
    vdims = sorted(image.vdims, key=lambda d: d.name != value)
    return image.clone(vdims=vdims)


def hide_sparse_pixels(image: hv.Image, min_count: int) -> hv.Image:
    """``image`` (a rasterised map) with every pixel holding fewer than ``min_count`` subjects blank.

    The privacy floor on a map: zoomed in and coloured by a phenotype, one pixel can hold one
    subject, and its colour and hover would show that subject's value. A pixel's subjects are its
    count (density), its ``count`` value (a continuous colouring) or the sum over the categories
    (an ``ImageStack``); a blank pixel is NaN in every value, so neither colour nor hover is drawn.
    """
    if min_count <= 1:
        return image
    names = [d.name for d in image.vdims]
    arrays = {name: np.asarray(image.dimension_values(name, flat=False), dtype=np.float64) for name in names}
    if isinstance(image, hv.ImageStack):
        total = np.nansum(np.stack(list(arrays.values())), axis=0)
    else:
        total = arrays["count" if "count" in arrays else names[0]]
    sparse = ~(np.nan_to_num(total) >= min_count)
    if not sparse.any():
        return image
    data = {d.name: image.dimension_values(d, expanded=False) for d in image.kdims}
    for name, values in arrays.items():
        values = values.copy()
        values[sparse] = np.nan
        data[name] = values
    return image.clone(data=tuple(data[d.name] for d in (*image.kdims, *image.vdims)))


def create_latent_plot(
    data: pd.DataFrame,
    *,
    x: str = "x",
    y: str = "y",
    color_by: str | None = None,
    spec: PhenotypeSpec | None = None,
    selection: hv.streams.Pipe | None = None,
    extent: tuple[tuple[float, float], tuple[float, float]] | None = None,
    title: str = "",
    width: int = 460,
    height: int = 420,
    highlight: str = HIGHLIGHT,
    category_colors: Sequence[str] = CATEGORY_COLORS,
    streams: Sequence[hv.streams.Stream] = (),
    min_count: int = 0,
) -> hv.DynamicMap:
    """A rasterised scatter of every subject, built once; pan and zoom re-aggregate server-side.

    Parameters
    ----------
    data
        One row per subject with coordinate columns ``x``, ``y`` and, when colouring, ``color_by``
        (float for continuous, ``Categorical`` for categorical; see :func:`points_frame`).
    color_by
        Column to colour by, or ``None``/``"density"`` for the count per pixel.
    spec
        The phenotype's spec; decides continuous (mean per pixel, colour bar) or categorical
        (count per category, blended colours, legend).
    selection
        A ``Pipe`` whose data is a frame of the selected subjects' ``x``, ``y``; drawn as a
        second raster in ``highlight`` on top. ``None`` draws no highlight.
    extent
        Axis ranges of the whole projection; both layers aggregate on this grid until the user
        zooms, so the highlight's pixels line up with the base.
    streams
        Linked streams (``BoundsXY``, ``Lasso``, ``Tap``...) to attach; they are re-sourced onto
        the base raster, the one layer on which Bokeh's selection events reach them (sourced on
        the overlay they never fire).
    min_count
        Blank every pixel of either layer holding fewer subjects (:func:`hide_sparse_pixels`);
        the privacy floor in aggregate mode. ``0`` draws every pixel.

    Returns
    -------
    holoviews.DynamicMap
        The base raster, with the selection highlight overlaid when ``selection`` is given.
    """
    if color_by == DENSITY:
        color_by = None
    _aggregate_dask_frames_where_they_live(data)
    mode = color_mode(spec if color_by else None)
    if extent is None:
        extent = data_extent(data[[x, y]].to_numpy())
    vdims = [color_by] if color_by else []
    points = hv.Points(data, [x, y], vdims).redim.range(**{x: extent[0], y: extent[1]})
    base = rasterize_points(points, aggregator=_aggregator(mode, color_by), width=width, height=height)
    if min_count > 1:
        base = base.apply(hide_sparse_pixels, min_count=min_count)
    tools = ["hover", "box_select", "lasso_select", "tap"]
    common = dict(
        tools=tools,
        active_tools=["wheel_zoom", "pan"],
        width=width,
        height=height,
        title=title,
        xlabel=x,
        ylabel=y,
        default_tools=["pan", "wheel_zoom", "reset", "save"],
        hooks=[_ignore_bokeh_selection],
    )
    if mode == "density":
        base = base.opts(cmap=DENSITY_CMAP, cnorm="eq_hist", colorbar=True, clabel="subjects", **common)
    elif mode == "continuous":
        base = base.apply(_value_first, value=color_by).opts(
            cmap=CONTINUOUS_CMAP, colorbar=True, clabel=_label(color_by, spec), **common
        )
    else:
        colors = [category_colors[i % len(category_colors)] for i in range(len(spec.categories))]
        base = base.opts(cmap=colors, legend_position="top_left", **common)
    for stream in streams:
        stream.source = base
    layers = base
    if selection is not None:
        layers = base * create_selection_layer(
            selection, x=x, y=y, extent=extent, width=width, height=height, color=highlight, min_count=min_count
        )
    return layers


SELECTED = hv.Dimension("selected", label="selected subjects", range=(0, 1))
"""Value dimension of the highlight raster: distinct from the base's, so their colour ranges stay apart,
and with a fixed range (one colour anyway), so no redraw scans it and an empty one raises no warning."""


SPREAD_BELOW = (2_000, 10_000)
"""Occupied-pixel counts under which the highlight is spread by 2, then 1 pixel (none above)."""


def _aggregate_dask_frames_where_they_live(data: object) -> None:
    """A cluster backend's frame (a dask DataFrame) is rasterised partition by partition on the workers."""
    if type(data).__module__.startswith("dask"):
        from lse_panel.plotting.dask_raster import register_cluster_pipeline

        register_cluster_pipeline()


def _pixel_ratio() -> float:
    """The browser's device pixel ratio, as HoloViews' ``rasterize`` reads it (1 outside a served page)."""
    from panel import state

    info = state.browser_info
    ratio = getattr(info, "device_pixel_ratio", None) if info is not None else None
    return ratio if isinstance(ratio, (int, float)) else 1


def highlight_image(
    frame: pd.DataFrame | ClusterPoints | None,
    *,
    x: str,
    y: str,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    width: int,
    height: int,
    min_count: int = 0,
) -> hv.Image:
    """The selected points of ``frame`` counted per pixel on ``rasterize``'s grid; empty pixels are NaN.

    One ``Canvas.points`` call on the (already small) frame of selected coordinates and an
    ``hv.Image`` built from plain arrays: about 2 ms for 140k of 500k points selected. Through
    ``hv.Points`` → ``rasterize`` → ``dynspread`` a selection redraw of one rendered plot took about
    25 ms, now about 13 ms, most of it HoloViews' own plot update (tests/benchmarks/bench_explorer.py).
    The grid (ranges, pixel ratio, pixel centres) is the one ``rasterize`` uses for the base layer,
    so the two layers' pixels coincide. Pixels with fewer than ``min_count`` selected subjects
    are left empty (before spreading), as :func:`hide_sparse_pixels` does for the base.
    """
    ratio = _pixel_ratio()
    width, height = int(width * ratio), int(height * ratio)
    (x0, x1), (y0, y1) = (float(v) for v in x_range), (float(v) for v in y_range)
    xs = np.linspace(x0, x1, width + 1)
    ys = np.linspace(y0, y1, height + 1)
    xs, ys = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    counts = None
    if frame is not None and len(frame) and width > 0 and height > 0 and x1 > x0 and y1 > y0:
        canvas = ds.Canvas(plot_width=width, plot_height=height, x_range=(x0, x1), y_range=(y0, y1))
        if isinstance(frame, ClusterPoints):  # the Dask backend's: counted where the points live
            from lse_panel.plotting.dask_raster import aggregate_cluster_points

            agg = aggregate_cluster_points(frame, canvas)
        else:
            agg = canvas.points(frame, x, y, agg=ds.count())
        if min_count > 1:
            agg.data[agg.data < min_count] = 0
        occupied = int(np.count_nonzero(agg.data))
        # Spread only sparse selections (a handful of subjects stays visible when zoomed out);
        # dynspread on every large selection cost more than the aggregation itself.
        px = 2 if occupied <= SPREAD_BELOW[0] else 1 if occupied <= SPREAD_BELOW[1] else 0
        if 0 < px:
            agg = tf.spread(agg, px=px)
        counts = agg.data.astype(np.float32)
        counts[counts == 0] = np.nan
    if counts is None:
        counts = np.full((len(ys), len(xs)), np.nan, dtype=np.float32)
    return hv.Image((xs, ys, counts), [x, y], [SELECTED])


def create_selection_layer(
    pipe: hv.streams.Pipe,
    *,
    x: str = "x",
    y: str = "y",
    extent: tuple[tuple[float, float], tuple[float, float]],
    width: int = 460,
    height: int = 420,
    color: str = HIGHLIGHT,
    min_count: int = 0,
) -> hv.DynamicMap:
    """The selected subjects as a single-colour raster, re-drawn whenever ``pipe`` receives a frame.

    Its own ``RangeXY``/``PlotSize`` streams follow the same figure as the base raster, so pan and
    zoom re-aggregate both on one grid, while a selection change (a ``pipe`` event) re-aggregates
    this layer only: the base DynamicMap's inputs are unchanged, so HoloViews serves its last
    frame and Bokeh's copy of its image is not resent.
    """
    default_width, default_height = width, height
    style = dict(cmap=[color, color], alpha=0.9, colorbar=False, tools=[], hooks=[_ignore_bokeh_selection])

    def raster(
        data: pd.DataFrame | None = None,
        x_range: tuple[float, float] | None = None,
        y_range: tuple[float, float] | None = None,
        width: int | None = None,
        height: int | None = None,
        **_: object,
    ) -> hv.Image:
        return highlight_image(
            data,
            x=x,
            y=y,
            x_range=_finite_range(x_range, extent[0]),
            y_range=_finite_range(y_range, extent[1]),
            width=width or default_width,
            height=height or default_height,
            min_count=min_count,
        ).opts(**style)

    # Styled inside the callback: ``DynamicMap.opts`` would wrap it in one more Dynamic layer
    # (about 1.5 ms per redraw); styling the element costs about 0.4 ms.
    return hv.DynamicMap(raster, streams=[pipe, hv.streams.RangeXY(), hv.streams.PlotSize()])


def _finite_range(value: tuple[float, float] | None, default: tuple[float, float]) -> tuple[float, float]:
    # As rasterize does: the stream's range once the plot reports one, else the element's extent.
    if value is not None and all(v is not None and np.isfinite(v) for v in value):
        return value
    return default


def _label(name: str | None, spec: PhenotypeSpec | None) -> str:
    if not name:
        return ""
    return f"{name} ({spec.units})" if spec is not None and spec.units else name


# -- subgroups drawn over a map ------------------------------------------------------------------
def create_subgroup_points(data: pd.DataFrame | None = None, *, x: str = "x", y: str = "y") -> hv.Points:
    """Subgroup members on a latent map, each in its subgroup's colour (``x, y, subgroup, colour`` columns)."""
    if data is None or data.empty:
        data = pd.DataFrame({x: np.empty(0), y: np.empty(0), "subgroup": np.empty(0, dtype=object),
                             "colour": np.empty(0, dtype=object)})  # fmt: skip
    return hv.Points(data, [x, y], ["subgroup", "colour"]).opts(
        color="colour", size=4, alpha=0.8, line_color="white", line_width=0.3, tools=["hover"],
    )


# -- distributions (the filter histograms, the paper's panel A) ----------------------------------
def create_distribution_plot(
    name: str,
    spec: PhenotypeSpec,
    edges_or_labels: np.ndarray | Sequence[str],
    cohort_counts: np.ndarray,
    selection_counts: np.ndarray,
    *,
    selected_range: tuple[float, float] | None = None,
    width: int = 260,
    height: int = 110,
    highlight: str = HIGHLIGHT,
) -> hv.Overlay:
    """One phenotype's distribution over the cohort (grey) and over the selection (highlight).

    Both are shown as proportions of their group, so their shapes compare even when the
    selection is tiny. Continuous phenotypes take bin ``edges`` (len ``k + 1``); categorical
    take category labels (len ``k``).
    """
    cohort_p = _proportions(cohort_counts)
    sel_p = _proportions(selection_counts)
    label = _label(name, spec)
    # One value dimension per phenotype: Panel links axes that share a dimension name.
    proportion = hv.Dimension(f"{name}_proportion", label="proportion")
    common = dict(width=width, height=height, toolbar=None, default_tools=[], yaxis=None, title=label,
                  xlabel="", fontsize={"title": 9, "xticks": 7})
    if spec.type == "continuous":
        edges = np.asarray(edges_or_labels, dtype=np.float64)
        cohort = hv.Histogram((edges, cohort_p), kdims=[name], vdims=[proportion]).opts(
            fill_color=COHORT_COLOUR, line_color=COHORT_COLOUR, **common
        )
        sel = hv.Histogram((edges, sel_p), kdims=[name], vdims=[proportion]).opts(
            fill_alpha=0.0, line_color=highlight, line_width=1.5
        )
        layers = cohort * sel
        if selected_range is not None:
            layers = layers * hv.VSpan(*selected_range).opts(color="#888888", alpha=0.15)
        return layers.opts(hv.opts.Overlay(**{k: v for k, v in common.items() if k not in ("yaxis",)}))
    labels = [str(label_) for label_ in edges_or_labels]
    frame = pd.DataFrame(
        {
            name: labels * 2,
            "group": ["cohort"] * len(labels) + ["selection"] * len(labels),
            proportion.name: np.concatenate([cohort_p, sel_p]),
        }
    )
    return hv.Bars(frame, [name, "group"], proportion).opts(
        color="group", cmap={"cohort": COHORT_COLOUR, "selection": highlight}, show_legend=False,
        multi_level=False, line_color=None, **common
    )


def _proportions(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


__all__ = [
    "DENSITY",
    "color_mode",
    "create_distribution_plot",
    "create_latent_plot",
    "create_selection_layer",
    "create_subgroup_points",
    "data_extent",
    "hide_sparse_pixels",
    "highlight_image",
    "points_frame",
    "rasterize_points",
    "selection_frame",
]
