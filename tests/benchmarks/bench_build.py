"""Benchmark `lse build`: each step's time, projection quality and peak memory, at 100k and 500k.

Run: ``python tests/benchmarks/bench_build.py [--sizes 100000 500000] [--keep DIR]``.
Each size is built from nothing in a child process (so its peak RSS is its own), then every
projection's trustworthiness and kNN preservation against its latents is measured on a sample.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build(size: int, out: Path) -> tuple[float, float]:
    """Build a bundle of ``size`` subjects in a child process; (wall seconds, peak RSS GB)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lse_panel.cli", "build", "--subjects", str(size), "--out", str(out)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, peak_kb / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 500_000])
    parser.add_argument("--keep", type=Path, help="build here instead of a temporary directory")
    args = parser.parse_args()
    from lse_panel.analysis.projection import projection_quality
    from lse_panel.cohort.bundle import open_bundle

    root = args.keep or Path(tempfile.mkdtemp(prefix="lse-bench-build-"))
    for size in args.sizes:
        out = root / f"cohort-{size}"
        wall, peak_gb = build(size, out)
        manifest = json.loads((out / "manifest.json").read_text())
        steps = manifest["build"]["steps"]
        print(f"\n== {size:,} subjects: built in {wall:.1f} s, peak RSS of the build process {peak_gb:.2f} GB")
        servable = 0.0
        for name, info in steps.items():
            print(f"  {name:22s} {info.get('elapsed_s', 0):8.1f} s")
            if not name.startswith("project:") or name in ("project:fused/pca", "project:ecg/pca",
                                                           "project:mri/pca", "project:fused/umap"):
                servable += info.get("elapsed_s", 0)
        print(f"  servable (synth, embed, cross-fit, every PCA, fused UMAP): {servable:.1f} s "
              f"(target 300 s); all projections: {sum(i.get('elapsed_s', 0) for i in steps.values()):.1f} s (target 600 s)")
        cohort = open_bundle(out)
        for key in sorted(cohort.projections):
            kind = key.split("/")[0]
            quality = projection_quality(np.asarray(cohort.latent(kind)), np.asarray(cohort.projection(key)),
                                         k=15, sample=5000, seed=0)
            path = manifest["projections"][key].get("params", {}).get("path", "")
            print(f"  {key:12s} {path:10s} trustworthiness {quality['trustworthiness']:.3f}  "
                  f"kNN preservation {quality['knn_preservation']:.3f}")
    print(f"\nbundles in {root}")


if __name__ == "__main__":
    main()
