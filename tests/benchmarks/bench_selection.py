"""Selection and linked-pane figures at 500k and 10M points, against matplotlib measured in the same run.

Run: ``.venv/bin/python tests/benchmarks/bench_selection.py [--sizes 500000 10000000]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
from _common import Timing, timed
from matplotlib.path import Path

from lse_panel.analysis.compare import compare_groups
from lse_panel.analysis.metric_statistics import prepare_metrics
from lse_panel.analysis.metrics import subgroup_metrics
from lse_panel.analysis.selection import box_mask, lasso_mask, mask_to_indices, ray_casting_mask_reference

MPL_CAP = 1_000_000
"""matplotlib is timed on at most this many points and scaled linearly (it is O(points × vertices))."""


def clustered_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float32 points in a few Gaussian blobs, like a UMAP of a cohort."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-8, 8, size=(12, 2))
    scales = rng.uniform(0.4, 1.6, size=12)
    which = rng.integers(0, 12, n)
    xy = centres[which] + scales[which, None] * rng.standard_normal((n, 2), dtype=np.float32)
    return np.ascontiguousarray(xy[:, 0], dtype=np.float32), np.ascontiguousarray(xy[:, 1], dtype=np.float32)


def hand_lasso(n_vertices: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A wobbly, concave closed curve around the middle of the cloud, as a hand would draw it."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    r = 5 + 1.5 * np.sin(3 * t) + 0.8 * np.sin(11 * t + 1) + 0.05 * rng.standard_normal(n_vertices)
    return 1.0 + r * np.cos(t), -0.5 + 0.8 * r * np.sin(t)


def best_of(fn, repeat: int = 5) -> Timing:
    """The fastest of ``repeat`` calls after one warm-up (:func:`_common.timed`; print ``fmt`` of it)."""
    return timed(lambda _: fn(), repeat=repeat)


def fmt(t: Timing, scale: float = 1.0) -> str:
    """Best wall ms, with the best CPU ms, each times ``scale``."""
    return f"{t.wall_min * scale * 1e3:8.1f} ms  (cpu {t.cpu_min * scale * 1e3:7.1f} ms)"


def bench_selection(n: int, n_vertices: int = 500) -> None:
    x, y = clustered_points(n)
    px, py = hand_lasso(n_vertices)
    box = fmt(best_of(lambda: box_mask(x, y, (-2.0, -3.0, 4.0, 2.0))))
    lasso_t = best_of(lambda: lasso_mask(x, y, px, py))
    lasso = fmt(lasso_t)
    to_idx = fmt(best_of(lambda: mask_to_indices(lasso_mask(x, y, px, py))))
    mask = lasso_mask(x, y, px, py)
    m = min(n, MPL_CAP)
    path = Path(np.column_stack([px, py]))
    pts = np.column_stack([x[:m], y[:m]])
    mpl_t = best_of(lambda: path.contains_points(pts), repeat=1)
    mpl = fmt(mpl_t, scale=n / m)
    # Agreement on a slice (the reference is O(N × V)); matplotlib differs only on boundary points.
    k = min(n, 200_000)
    exact = np.array_equal(mask[:k], ray_casting_mask_reference(x[:k], y[:k], px, py))
    mpl_diff = int(np.count_nonzero(path.contains_points(pts[:k]) != mask[:k]))
    scaled = " (timed on 1M points, scaled linearly)" if m < n else ""
    print(f"n={n:>11,}  selected {mask.mean():.1%}")
    print(f"  box_mask                      {box}")
    print(f"  lasso_mask ({n_vertices} vertices)     {lasso}")
    print(f"  lasso_mask + mask_to_indices  {to_idx}")
    print(f"  matplotlib contains_points    {mpl}{scaled}")
    print(f"  speed-up vs matplotlib        {mpl_t.wall_min * (n / m) / lasso_t.wall_min:8.0f} × wall, "
          f"{mpl_t.cpu_min * (n / m) / lasso_t.cpu_min:.0f} × cpu")  # fmt: skip
    print(f"  equals reference on {k:,} pts: {exact}; differs from matplotlib on {mpl_diff} points")


def bench_panes(n: int = 500_000) -> None:
    """Accuracy and comparison panes for a selection: 3 groups × 3 latents × 14 phenotypes."""
    rng = np.random.default_rng(0)
    table, tasks, predictions = {}, {}, {k: {} for k in ("ecg", "mri", "fused")}
    specs = {}
    for j in range(14):
        name = f"phen{j}"
        if j < 10:
            truth = rng.normal(60, 10, n).astype(np.float32)
            tasks[name], specs[name] = "regression", "continuous"
            for k in predictions:
                predictions[k][name] = (truth + rng.normal(0, 6, n)).astype(np.float32)
        else:
            truth = (rng.random(n) < 0.15).astype(np.int8)
            tasks[name], specs[name] = "classification", "binary"
            for k in predictions:
                logit = (2 * truth - 1) + rng.normal(0, 1.2, n)
                predictions[k][name] = (1 / (1 + np.exp(-logit))).astype(np.float32)
        table[name] = truth
    frame = pd.DataFrame(table, copy=False)
    x, y = clustered_points(n)
    px, py = hand_lasso(500)
    selection = mask_to_indices(lasso_mask(x, y, px, py))
    rest = np.setdiff1d(np.arange(n), selection, assume_unique=True)
    groups = {"selection": selection, "rest": rest, "all": np.arange(n)}
    t0 = time.perf_counter()
    prepared = prepare_metrics(frame, tasks, predictions)
    prep = time.perf_counter() - t0
    point = fmt(best_of(lambda: subgroup_metrics(frame, tasks, predictions, groups, prepared=prepared, intervals=False)))
    boot = fmt(best_of(lambda: subgroup_metrics(frame, tasks, predictions, groups, prepared=prepared)))
    compare = fmt(best_of(lambda: compare_groups(frame, specs, selection)))
    print(f"panes at n={n:,}, selection {selection.size:,}: 3 groups × 3 latents × 14 phenotypes (4 binary)")
    print(f"  prepare_metrics (once per cohort)       {prep * 1e3:8.1f} ms")
    print(f"  subgroup_metrics, point estimates       {point}")
    print(f"  subgroup_metrics, + intervals           {boot}")
    print(f"  compare_groups (selection vs rest)      {compare}")

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500_000, 10_000_000])
    parser.add_argument("--vertices", type=int, default=500)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: wall times include waiting for a core")
    for n in args.sizes:
        bench_selection(n, args.vertices)
    bench_panes()


if __name__ == "__main__":
    main()
