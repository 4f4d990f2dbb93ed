"""Explorer figures at 500k (optionally 2M) clustered points: re-rasterise, lasso → selection → views, vs link_selections.

Run: ``.venv/bin/python tests/benchmarks/bench_explorer.py [--sizes 500000 2000000] [--panes]``.

``hv.link_selections`` is the stock alternative, timed on the same points in the same run. Its lasso
needs spatialpandas or shapely (not dependencies here), so the like-for-like comparison is a box
selection; lasso timings are reported alone (bench_selection.py compares them with matplotlib).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import holoviews as hv
import numpy as np
import pandas as pd
from holoviews.operation.datashader import rasterize

from lse_panel.analysis.selection import combine, lasso_mask, mask_to_indices
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.schema import PhenotypeSpec
from lse_panel.components.latent_view import LatentPair
from lse_panel.components.state import ExplorerState
from lse_panel.plotting.latent import create_latent_plot, points_frame


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


def timed(fn: Callable[[int], object], repeat: int = 10, warm: int = 2) -> float:
    """Median seconds of ``fn(i)`` after ``warm`` untimed calls."""
    for i in range(warm):
        fn(i)
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ranges(i: int) -> dict[str, tuple[float, float]]:
    """A pan/zoom: slightly different ranges each call, so nothing is served from a cache."""
    s = 1 + 0.01 * i
    return {"x_range": (-6 * s, 6 * s), "y_range": (-5 * s, 5 * s)}


def run(n: int, panes: bool) -> None:
    print(f"\n=== {n:,} points ===")
    cohort = bench_cohort(n)
    coords = cohort.projection("ecg/umap")
    x, y = coords[:, 0], coords[:, 1]
    frame = points_frame(coords, cohort.phenotype("age"), name="age", spec=cohort.phenotype_specs["age"])
    points = hv.Points(frame, ["x", "y"], ["age"])

    # -- re-rasterise (server side), as a pan/zoom triggers it ------------------------------------
    import datashader as ds

    for label, agg in (("count", ds.count()), ("mean(age)", ds.mean("age"))):
        op = rasterize.instance(aggregator=agg, width=460, height=420, dynamic=False)
        t = timed(lambda i: op(points, **ranges(i)))
        print(f"re-rasterise {label:<10} {t * 1e3:7.1f} ms   (target ≤ 30 ms at 500k)")
    # Through a real Bokeh plot: stream events re-run the pipelines and update the glyph data,
    # as in a served session (minus the websocket).
    renderer = hv.renderer("bokeh")
    plot = renderer.get_plot(create_latent_plot(points_frame(coords), selection=hv.streams.Pipe(data=None)))
    range_streams = [s for s in plot.streams if isinstance(s, hv.streams.RangeXY)]

    def pan(i: int) -> None:
        for s in range_streams:
            s.update(**ranges(i))
        hv.streams.Stream.trigger(range_streams)

    print(f"re-rasterise rendered plot (base + highlight, Bokeh data updated) {timed(pan) * 1e3:7.1f} ms")

    # -- lasso → indices -------------------------------------------------------------------------
    poly = hand_lasso(500)
    t_lasso = timed(lambda i: mask_to_indices(lasso_mask(x, y, poly[:, 0] + 1e-3 * i, poly[:, 1])))
    selected = mask_to_indices(lasso_mask(x, y, poly[:, 0], poly[:, 1]))
    print(f"lasso 500 vertices → indices {t_lasso * 1e3:7.1f} ms   ({selected.size:,} selected; target ≤ 20 ms)")
    t_combine = timed(lambda i: combine(selected, selected[::2], "subtract"))
    print(f"combine (subtract)            {t_combine * 1e3:7.1f} ms")

    # -- events through the linked views: state, both highlights re-rasterised in rendered plots --
    state = ExplorerState(cohort)
    pair = LatentPair(state)
    views = list(pair.views.values())
    for view in views:
        renderer.get_plot(view.plot)

    t_views = timed(lambda i: views[0].lasso.event(geometry=poly + 1e-3 * i), repeat=5)
    print(f"lasso event → state → both views' highlights redrawn {t_views * 1e3:7.1f} ms")

    # -- the same box selection: ours (two linked views) vs hv.link_selections (one view) ---------
    bounds = (-2.0, -3.0, 4.0, 2.0)
    t_ours = timed(lambda i: views[0].box.event(bounds=(bounds[0] + 1e-3 * i, *bounds[1:])), repeat=5)
    base = hv.Points(points_frame(coords), ["x", "y"])
    linked = hv.link_selections.instance()
    renderer.get_plot(linked(rasterize(base, width=460, height=420)))

    def stock_box(i: int) -> None:
        box = (bounds[0] + 1e-3 * i, *bounds[1:])
        linked.selection_expr = base._get_selection_expr_for_stream_value(bounds=box)[0]

    t_stock = timed(stock_box, repeat=3, warm=1)
    print(f"box selection → views redrawn: ours (2 views) {t_ours * 1e3:7.1f} ms vs hv.link_selections "
          f"(1 view) {t_stock * 1e3:7.1f} ms → {t_stock / t_ours:5.1f}× faster")

    if panes:
        run_panes(n)


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
    print(f"selection → all linked panes (no bootstrap) {took * 1e3:7.1f} ms "
          f"({explorer.state.n_selected:,} selected; target ≤ 150 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500_000])
    parser.add_argument("--panes", action="store_true", help="also time selection → decode/accuracy panes")
    args = parser.parse_args()
    for n in args.sizes:
        run(n, args.panes)


if __name__ == "__main__":
    main()
