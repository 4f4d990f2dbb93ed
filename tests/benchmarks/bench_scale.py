"""The scale table: build, re-rasterise, lasso, selection → panes and memory at 500k, 2M, 10M; in process and on Dask.

Run: ``lse bench --sizes 500000 2000000 10000000 [--data DIR] [--json out.json]`` (or this script
with the same options).

For each size the script finds a bundle in ``--data`` (``scale-<N>``; ``--base`` for the size of
an existing bundle, e.g. the 500k demo) or makes one: ``--make build`` runs ``lse build`` (the
real thing: about 0.4–0.8 ms per subject of both cores for the embedding alone), ``--make tile``
(the default) repeats the base bundle's rows until there are N (ids made unique): the serving
figures depend on the number of points and columns, not on where the latents came from, and a
tiled 10M bundle takes minutes of disk writes instead of hours of encoding. The table says which.

Then, in process and on a ``LocalCluster`` (one single-threaded worker per core), in the same
run and on the same selections:

- build: each step's seconds as the bundle's manifest recorded them (real builds only);
- re-rasterise: a zoom of a rendered latent view (base and highlight layers);
- lasso → indices: a 200-vertex lasso holding about 30 % of the subjects (on Dask: the masks on the
  workers and their count), against ``matplotlib.path.Path.contains_points`` on the same points;
- box → views: a box selection redrawn in two linked views, against ``hv.link_selections``
  (whose lasso needs spatialpandas; the like-for-like comparison is a box, as bench_explorer.py):
  in process for both backends, and for the Dask backend also on the same cluster (the points as
  a persisted dask DataFrame, HoloViews and datashader's own dask path);
- selection → visible pane: what a served session recomputes (the maps, the filters and the
  decode tab); selection → all panes: a notebook, every pane live;
- memory: the serving process's RSS, and each worker's (each backend measured in a fresh process).

Every figure is a median of ``--repeat`` runs after a warm-up, wall time on a shared machine:
give the load (``uptime``) with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def timed(fn: Callable[[int], Any], repeat: int) -> float:
    """Median seconds of ``fn(i)`` over ``repeat`` runs after one warm-up."""
    fn(0)
    times = []
    for i in range(1, repeat + 1):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


# -- bundles ---------------------------------------------------------------------------------------------
def tile_bundle(base: Path, out: Path, n: int) -> Path:
    """A bundle of ``n`` rows repeating ``base``'s rows (ids offset per repeat), written column by column."""
    from lse_panel.cohort.bundle import MANIFEST, atomic_write_json, read_manifest

    manifest = read_manifest(base)
    m = int(manifest["n_subjects"])
    staging = out.with_name(f".{out.name}.tiling")
    staging.mkdir(parents=True, exist_ok=True)

    def tile(relative: str, *, ids: bool = False) -> None:
        source = np.load(base / relative, mmap_mode="r")
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": source.dtype.str, "fortran_order": False, "shape": (n, *source.shape[1:])}
            )
            for start in range(0, n, m):
                rows = min(m, n - start)
                block = np.asarray(source[:rows])
                if ids:
                    block = block + np.int64(start // m) * np.int64(10 ** len(str(int(source.max()))))
                fh.write(np.ascontiguousarray(block).tobytes())

    tile(manifest["ids"]["file"], ids=True)
    for group in ("phenotypes", "latents", "projections"):
        for meta in manifest.get(group, {}).values():
            tile(meta["file"])
    for per in manifest.get("predictions", {}).values():
        for meta in per.values():
            tile(meta["file"])
    manifest = {**manifest, "n_subjects": n, "raw": {}, "build": {"status": "complete", "steps": {},
                "tiled_from": str(base)}}  # fmt: skip
    manifest.pop("layout", None)
    atomic_write_json(staging / MANIFEST, manifest)
    os.replace(staging, out)
    return out


def find_or_make(n: int, args: argparse.Namespace) -> tuple[Path, str]:
    from lse_panel.cohort.bundle import read_manifest

    if args.base is not None and int(read_manifest(args.base)["n_subjects"]) == n:
        return args.base, "reused"
    path = args.data / f"scale-{n}"
    if (path / "manifest.json").exists():
        return path, "tiled" if read_manifest(path).get("build", {}).get("tiled_from") else "reused"
    if args.make == "build":
        subprocess.check_call([sys.executable, "-m", "lse_panel.cli", "build", "--subjects", str(n), "--out", str(path)])
        return path, "built"
    if args.base is None:
        raise SystemExit(f"no bundle of {n:,} subjects in {args.data}; pass --base BUNDLE to tile from, or --make build.")
    start = time.perf_counter()
    tile_bundle(args.base, path, n)
    print(f"  tiled {args.base} to {n:,} subjects in {time.perf_counter() - start:.0f} s", flush=True)
    return path, "tiled"


def lasso(coords: np.ndarray, share: float = 0.3) -> np.ndarray:
    """A 200-vertex wobbly loop around the densest part of ``coords``, holding roughly ``share`` of them."""
    sample = coords[:: max(1, len(coords) // 200_000)]
    centre = np.median(sample, axis=0)
    radius = np.quantile(np.linalg.norm(sample - centre, axis=1), share)
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    r = radius * (1 + 0.08 * np.sin(5 * t))
    return np.c_[centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)]


# -- one backend at one size -------------------------------------------------------------------------------
def measure(path: Path, key: str, poly: np.ndarray, box: tuple[float, ...], client: Any, repeat: int) -> dict[str, float]:
    import holoviews as hv

    from lse_panel.components.explorer import Explorer

    renderer = hv.renderer("bokeh")
    rss0 = rss_mb()
    start = time.perf_counter()
    explorer = Explorer.from_bundle(path, dask=client)
    out: dict[str, float] = {"open_s": time.perf_counter() - start}
    if hasattr(explorer.accuracy_pane, "bootstrap"):
        explorer.accuracy_pane.bootstrap = False  # its interval follows the point estimates; timed apart
    backend = explorer.backend
    views = list(explorer.latent_view.views.values())
    kind, _, method = key.partition("/")
    explorer.latent_view.method = method
    plots = [renderer.get_plot(view.shown) for view in views]
    (x0, x1), (y0, y1) = backend.extent(views[0].key)
    ranges = [s for s in plots[0].streams if isinstance(s, hv.streams.RangeXY)]

    def zoom(i: int) -> None:
        f = 0.3 + 0.02 * i
        for stream in ranges:
            stream.update(x_range=(x0 + f * (x1 - x0) / 2, x1 - f * (x1 - x0) / 2),
                          y_range=(y0 + f * (y1 - y0) / 2, y1 - f * (y1 - y0) / 2))  # fmt: skip
        hv.streams.Stream.trigger(ranges)

    xs, ys = poly[:, 0], poly[:, 1]
    out["lasso_s"] = timed(lambda i: backend.select_lasso(key, xs * (1 + 1e-4 * i), ys), repeat)
    selected = backend.select_lasso(key, xs, ys)
    out["selected"] = backend.size(selected)
    explorer.state.select(selected)
    out["rerasterise_s"] = timed(zoom, repeat)
    panes = {name: getattr(getattr(explorer, name), "scheduler", None)
             for name in ("decode_pane", "accuracy_pane", "compare_pane", "perturb_pane", "interpolate_pane")}  # fmt: skip

    def only(active: set[str]) -> None:
        for name, scheduler in panes.items():
            if scheduler is not None:
                scheduler.set_active(name in active)

    # Like bench_explorer.py against link_selections: the two maps (and the filters' histograms), no pane.
    only(set())
    out["box_views_s"] = timed(lambda i: views[0].box.event(bounds=(box[0] + 1e-4 * i, *box[1:])), repeat)
    explorer.state.mode = "new"

    def select(i: int) -> None:
        explorer.select(lasso=poly * (1 + 1e-4 * i), on=key)

    only(set(panes))
    out["all_panes_s"] = timed(select, repeat)
    only({"decode_pane"})  # served, the visible tab (Decode, the first) recomputes; the others when shown
    out["visible_pane_s"] = timed(select, repeat)
    out["client_rss_mb"] = rss_mb()
    out["client_rss_growth_mb"] = rss_mb() - rss0
    if client is not None:
        workers = client.run(lambda: __import__("psutil").Process().memory_info().rss / 2**20)
        out["worker_rss_mb"] = max(workers.values())
        out["workers"] = len(workers)
    backend.close()
    return out


def baselines(path: Path, key: str, poly: np.ndarray, box: tuple[float, ...], repeat: int) -> dict[str, float]:
    """``Path.contains_points`` on the lasso and ``hv.link_selections`` on the box, in process, same points."""
    import holoviews as hv
    import pandas as pd
    from holoviews.operation.datashader import rasterize
    from matplotlib.path import Path as MplPath

    from lse_panel.cohort.bundle import open_bundle

    coords = np.asarray(open_bundle(path).projection(key))
    out = {"mpl_lasso_s": timed(lambda i: MplPath(poly * (1 + 1e-4 * i)).contains_points(coords), max(1, repeat // 2))}
    kind = key.split("/")[0]
    other = key.replace(kind, "mri" if kind != "mri" else "ecg", 1)
    second = np.asarray(open_bundle(path).projection(other))
    table = pd.DataFrame({"ax": coords[:, 0], "ay": coords[:, 1], "bx": second[:, 0], "by": second[:, 1]}, copy=False)
    a, b = hv.Points(table, ["ax", "ay"]), hv.Points(table, ["bx", "by"])
    linked = hv.link_selections.instance()
    hv.renderer("bokeh").get_plot(linked(rasterize(a, width=460, height=420) + rasterize(b, width=460, height=420)))

    def select(i: int) -> None:
        linked.selection_expr = a._get_selection_expr_for_stream_value(bounds=(box[0] + 1e-4 * i, *box[1:]))[0]

    out["link_selections_box_s"] = timed(select, max(1, repeat // 2))
    return out


def cluster_baseline(path: Path, key: str, box: tuple[float, ...], client: Any, repeat: int) -> dict[str, float]:
    """``hv.link_selections`` on the same box with the points as a dask DataFrame persisted on the same cluster.

    The like-for-like reference of the Dask backend: HoloViews and datashader's own dask path on
    the cluster the backend uses (one partition per worker).
    """
    import dask.dataframe as dd
    import holoviews as hv
    import pandas as pd
    from holoviews.operation.datashader import rasterize

    from lse_panel.cohort.bundle import open_bundle

    kind = key.split("/")[0]
    other = key.replace(kind, "mri" if kind != "mri" else "ecg", 1)
    cohort = open_bundle(path)
    first, second = np.asarray(cohort.projection(key)), np.asarray(cohort.projection(other))
    table = pd.DataFrame({"ax": first[:, 0], "ay": first[:, 1], "bx": second[:, 0], "by": second[:, 1]})
    del first, second
    frame = dd.from_pandas(table, npartitions=len(client.scheduler_info()["workers"])).persist()
    del table
    a, b = hv.Points(frame, ["ax", "ay"]), hv.Points(frame, ["bx", "by"])
    linked = hv.link_selections.instance()
    hv.renderer("bokeh").get_plot(linked(rasterize(a, width=460, height=420) + rasterize(b, width=460, height=420)))

    def select(i: int) -> None:
        linked.selection_expr = a._get_selection_expr_for_stream_value(bounds=(box[0] + 1e-4 * i, *box[1:]))[0]

    return {"link_selections_cluster_box_s": timed(select, max(1, repeat // 2))}


def build_steps(path: Path) -> dict[str, float]:
    from lse_panel.cohort.bundle import read_manifest

    steps = read_manifest(path).get("build", {}).get("steps", {})
    return {name: float(info.get("elapsed_s", 0.0)) for name, info in steps.items()}


def in_child(what: str, args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    """Run one measurement in a fresh process, so its memory figures are its own (no other backend's pages)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        out = Path(tmp) / "out.json"
        command = [sys.executable, __file__, "--child", what, "--child-out", str(out), "--on", args.on,
                   "--repeat", str(args.repeat), *extra]  # fmt: skip
        subprocess.check_call(command)
        return json.loads(out.read_text())


def child(args: argparse.Namespace) -> None:
    poly = np.asarray(json.loads(args.poly))
    box = tuple(json.loads(args.box))
    if args.child == "baselines":
        result = baselines(args.path, args.on, poly, box, args.repeat)
    else:
        client = None
        if args.child in ("dask", "dask-baseline"):
            from lse_panel.cohort.dask_backend import connect

            client = connect("local")
        if args.child == "dask-baseline":
            result = cluster_baseline(args.path, args.on, box, client, args.repeat)
        else:
            result = measure(args.path, args.on, poly, box, client, args.repeat)
        if client is not None:
            cluster = client.cluster
            client.close()
            cluster.close()
    args.child_out.write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=["baselines", "in-process", "dask", "dask-baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--poly", help=argparse.SUPPRESS)
    parser.add_argument("--box", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500_000])
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--base", type=Path, default=None, help="an existing bundle: reused at its size, tiled for larger ones")
    parser.add_argument("--make", choices=["tile", "build"], default="tile")
    parser.add_argument("--on", default="fused/umap")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["in-process", "dask"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.base is None and (REPO / "data" / "demo" / "manifest.json").exists():
        args.base = REPO / "data" / "demo"

    from lse_panel.cohort.bundle import open_bundle

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        path, origin = find_or_make(n, args)
        cohort = open_bundle(path)
        coords = np.asarray(cohort.projection(args.on))
        poly = lasso(coords)
        x0, x1, y0, y1 = coords[:, 0].min(), coords[:, 0].max(), coords[:, 1].min(), coords[:, 1].max()
        box = (float(x0), float(y0), float(x0 + 0.5 * (x1 - x0)), float(y0 + 0.5 * (y1 - y0)))
        del cohort, coords
        where = ["--path", str(path), "--poly", json.dumps(poly.tolist()), "--box", json.dumps(list(box))]
        base = {"subjects": n, "bundle": str(path), "origin": origin, "build_s": build_steps(path)}
        base |= in_child("baselines", args, *where)
        for backend in args.backends:
            print(f"  {n:,} {backend} ...", flush=True)
            row = {**base, "backend": backend, **in_child(backend, args, *where)}
            if backend == "dask":
                row |= in_child("dask-baseline", args, *where)
                row["x_link_selections_cluster"] = row["link_selections_cluster_box_s"] / row["box_views_s"]
            row["x_link_selections"] = row["link_selections_box_s"] / row["box_views_s"]
            row["x_contains_points"] = row["mpl_lasso_s"] / row["lasso_s"]
            rows.append(row)
            print_row(row)
    print_table(rows)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")


def print_row(row: dict[str, Any]) -> None:
    print("   " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                            if k not in ("bundle", "build_s")), flush=True)  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("subjects", "backend", "origin", "build (embed s)", "re-raster ms", "lasso ms", "× contains_points",
              "box→views ms", "× link_selections", "× link_selections on the cluster", "→visible s", "→all panes s", "client MB", "worker MB")
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        embed = r["build_s"].get("embed")
        cells = (f"{r['subjects']:,}", r["backend"], r["origin"], f"{embed:.0f}" if embed else "—",
                 f"{r['rerasterise_s'] * 1e3:.0f}", f"{r['lasso_s'] * 1e3:.0f}", f"{r['x_contains_points']:.0f}×",
                 f"{r['box_views_s'] * 1e3:.0f}", f"{r['x_link_selections']:.1f}×",
                 f"{r['x_link_selections_cluster']:.1f}×" if "x_link_selections_cluster" in r else "—",
                 f"{r['visible_pane_s']:.2f}",
                 f"{r['all_panes_s']:.2f}", f"{r['client_rss_mb']:.0f}",
                 f"{r['worker_rss_mb']:.0f}" if "worker_rss_mb" in r else "—")  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
