"""A new session's cost with many saved subgroups: 10,000 in the bundle must cost a new session under 1 s more.

Run: ``.venv/bin/python tests/benchmarks/bench_subgroups.py [--subjects 20000] [--subgroups 10000]
[--repeats 3]``. Builds a bundle of ``--subjects`` (``tiny_cohort``), times a new session
(``Explorer.from_bundle`` with no decoder, then its layout's Bokeh models, as a page would get them)
with no saved subgroups (the baseline, measured in the same run), then writes ``--subgroups``
subgroups of 50–500 members each straight into the store's files (saving them one by one would
rewrite the listing 10,000 times) and times a new session again. Prints both medians, the extra
cost and the ratio; target: extra < 1 s. Also times ``SubgroupStore.names()``, ``summaries()`` and
a full ``list()`` on a fresh store.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import panel as pn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lse_panel.cohort.bundle import open_bundle  # noqa: E402
from lse_panel.cohort.subgroups import MEMBER_DIR, STORE_FILE, STORE_VERSION, SubgroupStore  # noqa: E402
from lse_panel.components.explorer import Explorer  # noqa: E402
from lse_panel.palette import SUBGROUP_COLOURS  # noqa: E402
from lse_panel.testing import tiny_cohort, write_cohort_bundle  # noqa: E402


def write_many(bundle: Path, count: int, seed: int = 0) -> None:
    """Write ``count`` subgroups in the store's format in one go: member files, then one listing."""
    cohort = open_bundle(bundle)
    rng = np.random.default_rng(seed)
    ids = np.asarray(cohort.ids)
    (bundle / MEMBER_DIR).mkdir(exist_ok=True)
    listing = []
    for k in range(count):
        rows = np.sort(rng.choice(cohort.n_subjects, size=int(rng.integers(50, 500)), replace=False)).astype(np.int64)
        stem = f"{MEMBER_DIR}/group-{k}-{uuid.uuid4().hex[:12]}"
        np.save(bundle / f"{stem}.ids.npy", ids[rows], allow_pickle=False)
        np.save(bundle / f"{stem}.rows.npy", rows, allow_pickle=False)
        listing.append({
            "name": f"group {k}", "colour": SUBGROUP_COLOURS[k % len(SUBGROUP_COLOURS)], "created": "2026-11-30T20:00:00+0000",
            "n": int(rows.size), "files": {"ids": f"{stem}.ids.npy", "rows": f"{stem}.rows.npy"},
            "rule": [{"kind": "ids", "mode": "new", "ids": ids[rows[:3]].tolist()}],
        })  # fmt: skip
    (bundle / STORE_FILE).write_text(json.dumps({"version": STORE_VERSION, "subgroups": listing}))


def new_session(bundle: Path) -> float:
    """Seconds to open a new session: the explorer and the Bokeh models of its page."""
    start = time.perf_counter()
    explorer = Explorer.from_bundle(bundle, decode=None)
    pn.Column(*explorer.main_panes()).get_root()
    return time.perf_counter() - start


def median_time(bundle: Path, repeats: int) -> float:
    new_session(bundle)  # warm caches (imports, frames) shared by every session of a process
    return statistics.median(new_session(bundle) for _ in range(repeats))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20_000)
    parser.add_argument("--subgroups", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-subgroups-") as tmp:
        bundle = write_cohort_bundle(tiny_cohort(args.subjects), Path(tmp) / "bundle")
        baseline = median_time(bundle, args.repeats)
        start = time.perf_counter()
        write_many(bundle, args.subgroups)
        print(f"wrote {args.subgroups:,} subgroups in {time.perf_counter() - start:.1f} s")
        for what in ("names", "summaries", "list"):
            store = SubgroupStore(open_bundle(bundle))
            start = time.perf_counter()
            getattr(store, what)()
            print(f"fresh store .{what}(): {time.perf_counter() - start:.3f} s")
        many = median_time(bundle, args.repeats)
    extra = many - baseline
    print(f"new session, no subgroups:          {baseline:.3f} s (median of {args.repeats})")
    print(f"new session, {args.subgroups:,} subgroups: {many:.3f} s (median of {args.repeats})")
    print(f"extra: {extra:.3f} s, ratio {many / baseline:.2f}x -> {'PASS' if extra < 1.0 else 'FAIL'} (target extra < 1 s)")


if __name__ == "__main__":
    main()
