"""Issue 11's benchmark: a lasso on a real bundle → every pane, against an older checkout timed in the same run.

Run: ``.venv/bin/python tests/benchmarks/bench_panes.py [--bundle DIR] [--baseline CHECKOUT] [--repeat 5]``,
e.g. with the old main as the baseline::

    git worktree add /tmp/old 70c0f3d
    .venv/bin/python tests/benchmarks/bench_panes.py --bundle data/demo --baseline /tmp/old

Cases (each the median of ``--repeat`` lassos after a warm-up, the lasso nudged each time so no
cache answers):

- **notebook, point estimates**: every pane live (no tab scheduling): ``Explorer.select(lasso=...)``
  → the filters, decode, accuracy, comparison, perturbation and interpolation panes recomputed.
  The baseline runs with its bootstrap off; this checkout computes its intervals in the same
  step (they come from the same sums), so it does at least the baseline's work.
- **notebook, estimates + intervals**: the same with the baseline's bootstrap on (its default).
- **notebook, saved-subgroup comparison**: point estimates, compared with a saved subgroup.
- **served, visible pane**: as ``panel serve`` runs it, only the visible tab's pane recomputes
  (the others are marked inactive, as the Explorer's tabs do); once per pane as the visible one.
  Server side only: the websocket and the browser's drawing are not in it.

Each checkout runs in its own process (``PYTHONPATH`` set to it), one after the other, so both see about the
same machine load; wall and CPU (all threads of the process) are printed, and the ratios. The
bundle is opened through a shallow copy (symlinks to its columns, its own subgroup store), so
saving the benchmark's subgroup never writes into the bundle given. Without ``--bundle`` it uses
``data/demo`` of this checkout when built, else (or with ``--tiny N``) a ``tiny_cohort``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEMO = REPO / "data" / "demo"
PANES = ("decode_pane", "accuracy_pane", "compare_pane", "perturb_pane", "interpolate_pane")
VISIBLE = ("decode_pane", "accuracy_pane", "compare_pane")
"""Tabs whose pane is timed as the visible one in the served case."""


# ----------------------------------------------------------------------------- one checkout (a worker)


def _timed_schedulers(explorer: Any) -> dict[str, list[tuple[float, float]]]:
    """Wrap each pane's scheduler so each pane's outermost work is timed (wall, CPU; nested work counted once)."""
    spent: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name in PANES:
        scheduler = getattr(getattr(explorer, name, None), "scheduler", None)
        if scheduler is None:
            continue
        original = scheduler.schedule
        depth = {"n": 0}

        def schedule(key: str, area: Any, work: Callable[[], None], *, _name: str = name, _orig=original,
                     _depth=depth) -> None:  # fmt: skip
            def timed() -> None:
                _depth["n"] += 1
                c0, t0 = time.process_time(), time.perf_counter()
                try:
                    work()
                finally:
                    _depth["n"] -= 1
                    if _depth["n"] == 0:
                        spent[_name].append((time.perf_counter() - t0, time.process_time() - c0))

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


def _set_intervals(explorer: Any, on: bool) -> None:
    """Intervals on or off, whichever switch this checkout has (``intervals``, or the old ``bootstrap``)."""
    pane = explorer.accuracy_pane
    pane.param.update(**{"intervals" if "intervals" in pane.param else "bootstrap": on})


def _run_case(explorer: Any, spent: dict, poly: np.ndarray, on: str, repeat: int) -> dict[str, Any]:
    walls, cpus = [], []
    panes: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for i in range(repeat + 1):
        for values in spent.values():
            values.clear()
        c0, t0 = time.process_time(), time.perf_counter()
        explorer.select(lasso=poly * (1 + 1e-4 * (i + 1)), on=on)
        if i:  # the first run warms caches
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            for name, values in spent.items():
                panes[name].append((sum(w for w, _ in values), sum(c for _, c in values)))
    return {
        "wall": statistics.median(walls), "cpu": statistics.median(cpus),
        "panes": {name: [statistics.median(w for w, _ in v), statistics.median(c for _, c in v)]
                  for name, v in panes.items()},
    }  # fmt: skip


def worker(bundle: Path | None, tiny: int, on: str, repeat: int) -> dict[str, Any]:
    """Every case on the ``lse_panel`` this process imports; a JSON-ready dict."""
    import lse_panel
    from lse_panel.components.explorer import Explorer

    if bundle is not None:
        explorer = Explorer.from_bundle(bundle)
    else:
        from lse_panel.testing import tiny_cohort, tiny_decoder

        explorer = Explorer(tiny_cohort(tiny), tiny_decoder(8))
    spent = _timed_schedulers(explorer)
    poly = _lasso(np.asarray(explorer.cohort.projection(on)))
    explorer.select(lasso=poly, on=on)
    out: dict[str, Any] = {"package": str(Path(lse_panel.__file__).parent), "selected": int(explorer.state.n_selected)}
    _set_intervals(explorer, False)
    out["notebook, point estimates"] = _run_case(explorer, spent, poly, on, repeat)
    _set_intervals(explorer, True)
    out["notebook, estimates + intervals"] = _run_case(explorer, spent, poly, on, repeat)
    _set_intervals(explorer, False)
    explorer.subgroups.save_condition("bench older", "age >= 60", overwrite=True)
    explorer.state.comparison = "bench older"
    out["notebook, saved-subgroup comparison"] = _run_case(explorer, spent, poly, on, repeat)
    explorer.state.comparison = "rest"
    _set_intervals(explorer, True)
    for visible in VISIBLE:
        for name in PANES:
            scheduler = getattr(getattr(explorer, name, None), "scheduler", None)
            if scheduler is not None:
                scheduler.set_active(name == visible)
        out[f"served, visible pane: {visible.removesuffix('_pane')}"] = _run_case(explorer, spent, poly, on, repeat)
    return out


# ----------------------------------------------------------------------------- the comparison


def shallow_copy(bundle: Path, into: Path) -> Path:
    """A bundle directory whose entries link to ``bundle``'s (read only) but with its own subgroup store."""
    into.mkdir(parents=True)
    for entry in bundle.iterdir():
        if entry.name.startswith(("subgroups", ".subgroups", "build.log")):
            continue
        (into / entry.name).symlink_to(entry.resolve())
    return into


def _run_worker(checkout: Path, args: argparse.Namespace, bundle: Path | None, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, str(HERE / "bench_panes.py"), "--worker", str(out), "--repeat", str(args.repeat),
           "--on", args.on, "--tiny", str(args.tiny)]  # fmt: skip
    if bundle is not None:
        cmd += ["--bundle", str(bundle)]
    # Run from a neutral directory so the checkout on PYTHONPATH, not this one, is imported.
    subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), check=True)
    return json.loads(out.read_text())


def _row(label: str, new: dict[str, Any], old: dict[str, Any] | None) -> str:
    text = f"{label:<40} {new['wall'] * 1e3:7.0f} {new['cpu'] * 1e3:7.0f}"
    if old is not None:
        text += (f"   {old['wall'] * 1e3:7.0f} {old['cpu'] * 1e3:7.0f}"
                 f"   {old['wall'] / new['wall']:5.1f}× {old['cpu'] / new['cpu']:5.1f}×")  # fmt: skip
    return text


def _panes(result: dict[str, Any]) -> str:
    return ", ".join(f"{name.removesuffix('_pane')} {w * 1e3:.0f}/{c * 1e3:.0f}" for name, (w, c) in result["panes"].items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--baseline", type=Path, default=None, help="an older checkout to time in the same run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--on", default="fused/umap")
    parser.add_argument("--tiny", type=int, default=0, help="time tiny_cohort(N) instead of a bundle")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:  # one checkout, in this process
        args.worker.write_text(json.dumps(worker(args.bundle, args.tiny, args.on, args.repeat)))
        return

    from _common import machine_load

    source = None if args.tiny else args.bundle or (DEMO if (DEMO / "manifest.json").exists() else None)
    if source is None and not args.tiny:
        args.tiny = 500_000
    checkouts = {"this": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    results: dict[str, dict[str, Any]] = {}
    loads = [machine_load()]
    with tempfile.TemporaryDirectory(prefix="bench-panes-") as tmp:
        for name, checkout in checkouts.items():
            bundle = shallow_copy(source, Path(tmp) / f"bundle-{name}") if source is not None else None
            results[name] = _run_worker(checkout, args, bundle, Path(tmp) / f"{name}.json")
            loads.append(machine_load())
    new, old = results["this"], results.get("baseline")
    print(f"\nbundle {source or f'tiny_cohort({args.tiny:,})'}; lasso on {args.on}: {new['selected']:,} selected; "
          f"median of {args.repeat}")  # fmt: skip
    print("machine: " + " → ".join(loads))
    print(f"this: {new['package']}" + (f"\nbaseline: {old['package']}" if old else ""))
    header = f"{'lasso → ...':<40} {'wall ms':>7} {'cpu ms':>7}"
    if old:
        header += f"   {'old wall':>7} {'old cpu':>7}   {'ratio (old / new): wall, cpu':>14}"
    print(header)
    for case in (k for k in new if isinstance(new[k], dict)):
        print(_row(case, new[case], old.get(case) if old else None))
    print("\nper pane, wall/cpu ms (this" + (" | baseline" if old else "") + "):")
    for case in (k for k in new if isinstance(new[k], dict)):
        print(f"  {case:<40} {_panes(new[case])}" + (f"\n  {'':<40} {_panes(old[case])}" if old else ""))


if __name__ == "__main__":
    main()
