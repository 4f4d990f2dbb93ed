"""Explorer figures at 500k (optionally 2M) clustered points: re-rasterise, lasso → selection → views, vs link_selections.

Run: ``.venv/bin/python tests/benchmarks/bench_explorer.py [--sizes 500000 2000000] [--panes]``.

Every figure is the median wall time and the median CPU time (``time.process_time``, all threads)
of the same calls: on a shared machine the wall time includes waiting for a core, the CPU time does
not. Each is also given as a multiple of a baseline measured in the same run (one datashader count
aggregation of all points, ``Canvas.points``), so runs on a busier or faster machine compare.

``hv.link_selections`` is the stock alternative, timed on the same points in the same run, with the
same box selection, on one view and on two linked views (its lasso needs spatialpandas or shapely,
not dependencies here, so the like-for-like comparison is a box; bench_selection.py compares the
lasso kernel with matplotlib).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import datashader as ds
import holoviews as hv
import numpy as np
import pandas as pd
from _common import Timing
from _common import timed as _timed
from holoviews.operation.datashader import rasterize

from lse_panel.analysis.selection import box_mask, combine, lasso_mask, mask_to_indices
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.schema import PhenotypeSpec
from lse_panel.components.latent_view import LatentPair, LatentView
from lse_panel.components.state import ExplorerState
from lse_panel.plotting.latent import create_latent_plot, points_frame, selection_frame


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """(n, 2) float32 points in a dozen Gaussian blobs, like a UMAP of a cohort."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-8, 8, size=(12, 2))
    scales = rng.uniform(0.4, 1.6, size=12)
    which = rng.integers(0, 12, n)
    return (centres[which] + scales[which, None] * rng.standard_normal((n, 2))).astype(np.float32)


def hand_lasso(n_vertices: int = 500, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    r = 5 + 1.5 * np.sin(3 * t) + 0.8 * np.sin(11 * t + 1) + 0.05 * rng.standard_normal(n_vertices)
    return np.c_[1.0 + r * np.cos(t), -0.5 + 0.8 * r * np.sin(t)]


def bench_cohort(n: int) -> Cohort:
    """A cohort of ``n`` subjects with two projected latent kinds and two phenotypes (no latents needed)."""
    rng = np.random.default_rng(2)
    specs = {
        "age": PhenotypeSpec("age", "continuous", "years"),
        "sex": PhenotypeSpec("sex", "categorical", "", "", ("female", "male")),
    }
    phen = pd.DataFrame({"age": rng.normal(60, 8, n).astype(np.float32), "sex": rng.integers(0, 2, n).astype(np.int8)})
    projections = {"ecg/umap": clustered(n, 0), "mri/umap": clustered(n, 1)}
    return Cohort.from_arrays(np.arange(n, dtype=np.int64), phen, specs, projections=projections)


BASELINE: Timing | None = None
"""The run's yardstick (set by :func:`run`): one ``Canvas.points`` count of every point."""


def timed(fn: Callable[[int], object], repeat: int = 10, warm: int = 2) -> Timing:
    """:func:`_common.timed` with this script's defaults (10 calls after 2 warm-ups)."""
    return _timed(fn, repeat=repeat, warm=warm)


def fmt(t: Timing) -> str:
    """``wall ms (cpu ms, × baseline cpu)``."""
    ratio = f", {t.cpu / BASELINE.cpu:5.1f}× baseline" if BASELINE is not None and BASELINE.cpu > 0 else ""
    return f"{t.wall * 1e3:7.1f} ms (cpu {t.cpu * 1e3:6.1f} ms{ratio})"


def report(label: str, t: Timing, note: str = "") -> None:
    print(f"{label:<58} {fmt(t)}{'   ' + note if note else ''}")


def ranges(i: int) -> dict[str, tuple[float, float]]:
    """A pan/zoom: slightly different ranges each call, so nothing is served from a cache."""
    s = 1 + 0.01 * i
    return {"x_range": (-6 * s, 6 * s), "y_range": (-5 * s, 5 * s)}


def _subplots(plot: hv.plotting.Plot) -> list:
    subplots = getattr(plot, "subplots", None) or {}
    return list(subplots.values()) if subplots else [plot]


def run(n: int, panes: bool) -> None:
    global BASELINE
    print(f"\n=== {n:,} points ===")
    cohort = bench_cohort(n)
    coords = cohort.projection("ecg/umap")
    x, y = coords[:, 0], coords[:, 1]
    frame = points_frame(coords, cohort.phenotype("age"), name="age", spec=cohort.phenotype_specs["age"])
    points = hv.Points(frame, ["x", "y"], ["age"])

    # -- the yardstick: datashader alone, counting every point once --------------------------------
    canvas_frame = points_frame(coords)
    BASELINE = timed(lambda i: ds.Canvas(460, 420, **ranges(i)).points(canvas_frame, "x", "y", ds.count()), repeat=20)
    report("baseline: datashader Canvas.points count (all points)", BASELINE)

    # -- re-rasterise (server side), as a pan/zoom triggers it ------------------------------------
    for label, agg in (("count", ds.count()), ("mean(age)", ds.mean("age"))):
        op = rasterize.instance(aggregator=agg, width=460, height=420, dynamic=False)
        report(f"re-rasterise {label} (hv rasterize operation)", timed(lambda i: op(points, **ranges(i))))
    # Through a real Bokeh plot: stream events re-run the pipelines and update the glyph data,
    # as in a served session (minus the websocket), with a selection of ~140k highlighted.
    poly = hand_lasso(500)
    selected = mask_to_indices(lasso_mask(x, y, poly[:, 0], poly[:, 1]))
    renderer = hv.renderer("bokeh")
    pipe = hv.streams.Pipe(data=selection_frame(canvas_frame, selected))
    plot = renderer.get_plot(create_latent_plot(canvas_frame, selection=pipe))
    range_streams = [s for s in plot.streams if isinstance(s, hv.streams.RangeXY)]

    def pan(i: int) -> None:
        for s in range_streams:
            s.update(**ranges(i))
        hv.streams.Stream.trigger(range_streams)

    report("re-rasterise rendered plot (base + highlight, Bokeh updated)", timed(pan), "target ≤ 30 ms")
    # A selection change redraws the highlight only: the base's Bokeh image is not rebuilt.
    base_plot = _subplots(plot)[0]
    before = base_plot.handles["source"].data["image"][0]
    t_highlight = timed(lambda i: pipe.send(selection_frame(canvas_frame, selected[i:])))
    kept = base_plot.handles["source"].data["image"][0] is before
    report("selection → highlight redrawn (one rendered plot)", t_highlight,
           f"base image {'kept' if kept else 'RE-SENT'}")

    # -- lasso → indices -------------------------------------------------------------------------
    t_lasso = timed(lambda i: mask_to_indices(lasso_mask(x, y, poly[:, 0] + 1e-3 * i, poly[:, 1])))
    report("lasso 500 vertices → indices", t_lasso, f"{selected.size:,} selected; target ≤ 20 ms")
    report("combine (subtract)", timed(lambda i: combine(selected, selected[::2], "subtract")))

    # -- events through the linked views: state, both highlights re-rasterised in rendered plots --
    state = ExplorerState(cohort)
    pair = LatentPair(state)
    views = list(pair.views.values())
    for view in views:
        renderer.get_plot(view.plot)
    t_views = timed(lambda i: views[0].lasso.event(geometry=poly + 1e-3 * i))
    report("lasso event → state → both views' highlights redrawn", t_views)

    compare_with_link_selections(cohort, renderer, views)

    if panes:
        run_panes(n)


def compare_with_link_selections(cohort: Cohort, renderer: hv.renderer, pair_views: list[LatentView]) -> None:
    """The same box on the same points: ours vs ``hv.link_selections``, on one view and on two linked views.

    Both sides start from a rendered Bokeh plot and end with every view's Bokeh data updated;
    both compute an exact box selection over every point. Ours: the box stream event → exact mask
    → per-session state → highlight raster of each view. Stock: a selection expression (what its
    box tool produces) → link_selections re-rasterises each view's selected and unselected layers.
    """
    bounds = (-2.0, -3.0, 4.0, 2.0)

    def box(i: int) -> tuple[float, float, float, float]:
        return (bounds[0] + 1e-3 * i, *bounds[1:])

    ecg, mri = cohort.projection("ecg/umap"), cohort.projection("mri/umap")
    n_selected = int(box_mask(ecg[:, 0], ecg[:, 1], bounds).sum())
    # One frame holding both projections: link_selections links views through shared columns.
    table = pd.DataFrame({"ex": ecg[:, 0], "ey": ecg[:, 1], "mx": mri[:, 0], "my": mri[:, 1]}, copy=False)
    ecg_points = hv.Points(table, ["ex", "ey"])
    mri_points = hv.Points(table, ["mx", "my"])

    def stock(n_views: int) -> Timing:
        linked = hv.link_selections.instance()
        if n_views == 1:
            # Its best case: a frame of just the two columns shown (it copies what it filters).
            shown = rasterize(hv.Points(table[["ex", "ey"]], ["ex", "ey"]), width=460, height=420)
        else:
            shown = rasterize(ecg_points, width=460, height=420) + rasterize(mri_points, width=460, height=420)
        renderer.get_plot(linked(shown))

        def select(i: int) -> None:
            linked.selection_expr = ecg_points._get_selection_expr_for_stream_value(bounds=box(i))[0]

        return timed(select, repeat=6, warm=1)

    single = LatentView(ExplorerState(cohort), kind="ecg", show_controls=False)
    renderer.get_plot(single.plot)
    ours_1 = timed(lambda i: single.box.event(bounds=box(i)), repeat=10)
    ours_2 = timed(lambda i: pair_views[0].box.event(bounds=box(i)), repeat=10)
    stock_1, stock_2 = stock(1), stock(2)
    print(f"box selection ({n_selected:,} points) → views redrawn, ours vs hv.link_selections (same data, same box);")
    print("  means over distinct boxes (link_selections alternates between a cheap and a dear update):")
    for label, ours, theirs in (("1 view ", ours_1, stock_1), ("2 views", ours_2, stock_2)):
        print(f"  {label}: ours {ours.wall_mean * 1e3:6.1f} ms (cpu {ours.cpu_mean * 1e3:6.1f}) vs link_selections "
              f"{theirs.wall_mean * 1e3:6.1f} ms (cpu {theirs.cpu_mean * 1e3:6.1f}) → "
              f"{theirs.wall_mean / ours.wall_mean:5.1f}× faster (wall), {theirs.cpu_mean / max(ours.cpu_mean, 1e-9):5.1f}× (cpu)"
              "   target ≥ 10×")


def run_panes(n: int) -> None:
    """Selection → every linked pane (filters, decode, accuracy) recomputed, on a tiny-cohort-like cohort."""
    from lse_panel.components.explorer import Explorer
    from lse_panel.testing import tiny_cohort, tiny_decoder

    cohort = tiny_cohort(n)
    explorer = Explorer(cohort, tiny_decoder(8))
    if hasattr(explorer.accuracy_pane, "bootstrap"):
        explorer.accuracy_pane.bootstrap = False
    # tiny_cohort's projections crowd into corners; a 500-vertex loop around the upper-right one.
    t = np.linspace(0, 2 * np.pi, 500, endpoint=False)
    poly = np.c_[8 + 4 * np.cos(t), 8 + 4 * np.sin(t)]
    took = timed(lambda i: explorer.select(lasso=poly * (1 + 1e-3 * i), on="fused/umap"), repeat=5, warm=1)
    report("selection → all linked panes (no bootstrap)", took,
           f"{explorer.state.n_selected:,} selected; target ≤ 150 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500_000])
    parser.add_argument("--panes", action="store_true", help="also time selection → decode/accuracy panes")
    args = parser.parse_args()
    for n in args.sizes:
        run(n, args.panes)


if __name__ == "__main__":
    main()
