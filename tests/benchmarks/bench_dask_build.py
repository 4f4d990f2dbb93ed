"""The build in process against the build on a LocalCluster, and the worker curve projected from the per-partition cost.

Run: ``python tests/benchmarks/bench_dask_build.py [--subjects 200000] [--projections pca] [--json out.json]``.

Both builds start from nothing in child processes of this one, one after the other, with the
same settings: the in-process build as ``lse build`` makes it by default (``.npy`` columns), the
cluster build with ``--dask local --partitions N`` (a few parts per worker); each step's seconds
come from the bundle's manifest. Only the embed step differs
between the two (one task per partition on the cluster; every other step runs in the builder
process either way), so the table gives the embed step's ratio and the whole build's.

The projection for 1–16 workers uses the cluster build's own figures: its per-partition cost
(seconds of one single-threaded worker per partition of ``--partition-rows``), the steps that stay
in the builder process (scaled linearly in the subjects from this run) and ``ceil(P / W)``
rounds of partitions for ``W`` workers. It is a projection, not a measurement: it assumes a
worker per core, no memory-bandwidth limit and partitions of equal cost.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build(out: Path, n: int, projections: list[str], dask: str | None, partitions: int | None) -> dict[str, object]:
    """Build ``n`` subjects into ``out`` in a child process; wall seconds and the manifest's step records."""
    command = [sys.executable, "-m", "lse_panel.cli", "build", "--subjects", str(n), "--out", str(out),
               "--projections", *projections]  # fmt: skip
    if dask:
        command += ["--dask", dask]
    if partitions:
        command += ["--partitions", str(partitions)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    wall = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    steps = manifest.get("build", {}).get("steps", {})
    return {
        "wall_s": wall,
        "steps_s": {name: float(info.get("elapsed_s", 0.0)) for name, info in steps.items()},
        "embed_figures": steps.get("embed", {}).get("figures", {}),
    }


def projected_curve(cluster: dict, n_measured: int, n_target: int, partition_rows: int) -> list[dict[str, float]]:
    """Build seconds at ``n_target`` for 1, 2, 4, 8, 16 workers, from the cluster build's figures."""
    per_partition = float(cluster["embed_figures"]["seconds_per_partition"])
    rows_measured = n_measured / max(int(cluster["embed_figures"]["partitions"]), 1)
    per_partition *= partition_rows / rows_measured  # the cost of a partition of the target's size
    serial = sum(s for name, s in cluster["steps_s"].items() if name != "embed") * n_target / n_measured
    parts = math.ceil(n_target / partition_rows)
    curve = []
    for workers in (1, 2, 4, 8, 16):
        embed = math.ceil(parts / workers) * per_partition
        curve.append({"workers": workers, "embed_s": embed, "build_s": embed + serial})
    base = curve[0]["build_s"]
    for point in curve:
        point["speed_up"] = base / point["build_s"]
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=200_000)
    parser.add_argument("--projections", nargs="+", default=["pca"])
    parser.add_argument("--target", type=int, default=10_000_000, help="cohort size of the projected curve")
    parser.add_argument("--partition-rows", type=int, default=250_000, help="rows per partition of the projection")
    parser.add_argument("--partitions", type=int, default=8,
                        help="Parquet parts of the cluster build (a few per worker, so the workers stay busy)")
    parser.add_argument("--keep", type=Path, help="build here instead of a temporary directory")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.subjects:,} subjects, "
          f"projections {' '.join(args.projections)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-dask-build-") as tmp:
        root = args.keep or Path(tmp)
        result: dict[str, object] = {"subjects": args.subjects, "projections": args.projections}
        for label, dask, parts in (("in-process", None, None), ("dask-local", "local", args.partitions)):
            out = root / f"build-{label}"
            if out.exists():
                raise SystemExit(f"{out} exists: remove it or pass another --keep")
            result[label] = build(out, args.subjects, args.projections, dask, parts)
            steps = result[label]["steps_s"]
            print(f"  {label}: {result[label]['wall_s']:.0f} s wall; "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()), flush=True)
        local, cluster = result["in-process"], result["dask-local"]
        result["embed_ratio"] = cluster["steps_s"]["embed"] / local["steps_s"]["embed"]
        result["wall_ratio"] = cluster["wall_s"] / local["wall_s"]
        result["load_after"] = os.getloadavg()[0]
        result["projected"] = projected_curve(cluster, args.subjects, args.target, args.partition_rows)
    print(f"\nembed step on the LocalCluster / in process: {result['embed_ratio']:.2f} "
          f"({(result['embed_ratio'] - 1) * 100:+.0f} %); whole build: {result['wall_ratio']:.2f} "
          f"({(result['wall_ratio'] - 1) * 100:+.0f} %); target ≤ 1.15")
    figures = cluster["embed_figures"]
    print(f"per-partition cost: {figures.get('seconds_per_partition', 0):.1f} s for "
          f"{args.subjects // max(int(figures.get('partitions', 1)), 1):,} rows on one single-threaded worker")
    print(f"\nPROJECTED (not measured) build of {args.target:,} subjects, partitions of {args.partition_rows:,} rows:")
    print("| workers | embed s | build s | speed-up |\n|---|---|---|---|")
    for p in result["projected"]:
        print(f"| {p['workers']} | {p['embed_s']:.0f} | {p['build_s']:.0f} | {p['speed_up']:.1f}× |")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
