"""A lasso on a real bundle → every pane of a notebook Explorer recomputed, with each pane's share.

Run: ``.venv/bin/python tests/benchmarks/bench_panes.py [--bundle DIR] [--repeat 5]``.

In a notebook every pane is live (no tab scheduling), so one lasso recomputes the filters'
histograms, the decode, accuracy, comparison, perturbation and interpolation panes in turn. This
times that whole chain from ``Explorer.select(lasso=...)`` to its return, and each pane's share
(the time spent in its scheduler's work). Three cases: comparison with the rest of the cohort,
with and without the accuracy pane's bootstrap, and comparison with a saved subgroup.

The bundle is copied to a temporary directory first, so saving the subgroup never writes into
the bundle given (the demo may be shared read-only). Without ``--bundle`` the script uses
``data/demo`` of this checkout when it is built, else a 500k ``tiny_cohort``.

It uses only the public Explorer API, so the same script times an older checkout too
(``PYTHONPATH=/path/to/old/checkout python tests/benchmarks/bench_panes.py``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


def _timed_schedulers(explorer: Any) -> dict[str, list[float]]:
    """Wrap each pane's scheduler so the outermost work of every pane is timed (nested work counted once)."""
    spent: dict[str, list[float]] = defaultdict(list)
    for name in ("decode_pane", "accuracy_pane", "compare_pane", "perturb_pane", "interpolate_pane"):
        scheduler = getattr(getattr(explorer, name, None), "scheduler", None)
        if scheduler is None:
            continue
        original = scheduler.schedule
        depth = {"n": 0}

        def schedule(key: str, area: Any, work: Callable[[], None], *, _name: str = name, _orig=original,
                     _depth=depth) -> None:
            def timed() -> None:
                _depth["n"] += 1
                start = time.perf_counter()
                try:
                    work()
                finally:
                    _depth["n"] -= 1
                    if _depth["n"] == 0:
                        spent[_name].append(time.perf_counter() - start)

            _orig(key, area, timed)

        scheduler.schedule = schedule
    return spent


def _lasso(coords: np.ndarray, share: float = 0.3) -> np.ndarray:
    """A 200-vertex wobbly loop around the densest part of ``coords``, sized to hold roughly ``share`` of them."""
    finite = coords[np.isfinite(coords).all(axis=1)]
    centre = np.median(finite, axis=0)
    radius = np.quantile(np.linalg.norm(finite - centre, axis=1), share)
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    r = radius * (1 + 0.08 * np.sin(5 * t))
    return np.c_[centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)]


per_pane: dict[tuple[str, str], list[float]] = {}
"""(case, pane) → the pane's seconds in each timed run."""


def run_case(explorer: Any, spent: dict[str, list[float]], poly: np.ndarray, on: str, repeat: int, label: str) -> None:
    walls, cpus = [], []
    for i in range(repeat + 1):
        for values in spent.values():
            values.clear()
        c0, t0 = time.process_time(), time.perf_counter()
        explorer.select(lasso=poly * (1 + 1e-4 * (i + 1)), on=on)
        if i:  # the first run warms caches
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            for name, values in spent.items():
                per_pane.setdefault((label, name), []).append(sum(values))
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    shares = ", ".join(
        f"{name.removesuffix('_pane')} {statistics.median(per_pane[(label, name)]) * 1e3:.0f}"
        for name in spent if (label, name) in per_pane
    )
    print(f"{label:<44} {wall * 1e3:7.0f} ms (cpu {cpu * 1e3:6.0f} ms)   per pane, ms: {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--on", default="fused/umap")
    parser.add_argument("--tiny", type=int, default=0, help="use tiny_cohort(N) instead of a bundle")
    args = parser.parse_args()

    import lse_panel
    from lse_panel.components.explorer import Explorer

    print(f"lse_panel from {Path(lse_panel.__file__).parent}")
    bundle = None if args.tiny else args.bundle or (DEMO if (DEMO / "manifest.json").exists() else None)
    with tempfile.TemporaryDirectory(prefix="bench-panes-") as tmp:
        if bundle is not None:
            copy = Path(tmp) / "bundle"
            shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("subgroups*", ".subgroups*", "build.log"))
            explorer = Explorer.from_bundle(copy)
            print(f"bundle {bundle} ({explorer.cohort.n_subjects:,} subjects), decoder: {explorer.decode is not None}")
        else:
            from lse_panel.testing import tiny_cohort, tiny_decoder

            n = args.tiny or 500_000
            explorer = Explorer(tiny_cohort(n), tiny_decoder(8))
            print(f"tiny_cohort({n:,}) with tiny_decoder(8)")
        spent = _timed_schedulers(explorer)
        poly = _lasso(np.asarray(explorer.cohort.projection(args.on)))
        explorer.select(lasso=poly, on=args.on)
        print(f"lasso of {len(poly)} vertices on {args.on}: {explorer.state.n_selected:,} selected")
        run_case(explorer, spent, poly, args.on, args.repeat, "comparison rest, bootstrap on (default)")
        explorer.accuracy_pane.bootstrap = False
        run_case(explorer, spent, poly, args.on, args.repeat, "comparison rest, bootstrap off")
        explorer.subgroups.save_condition("bench older", "age >= 60")
        explorer.state.comparison = "bench older"
        run_case(explorer, spent, poly, args.on, args.repeat, "comparison saved subgroup, bootstrap off")


if __name__ == "__main__":
    main()
