"""Benchmark `lse build`: each step's time, projection quality and peak memory, at 100k and 500k.

Run: ``python tests/benchmarks/bench_build.py [--sizes 100000 500000] [--keep DIR] [--existing data/demo]``.
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


def against_full_fit(cohort, rows: int) -> None:
    """The built fused UMAP against a full umap-learn fit of a random subset (a full fit of 500k takes ~7 min).

    Both maps are scored on the same rows: trustworthiness and kNN preservation against the
    latents, and kNN agreement (the share of each point's 15 map neighbours the two maps share).
    """
    from lse_panel.analysis.projection import projection_quality
    from lse_panel.model.projection import project

    latents = np.asarray(cohort.latent("fused"))
    built = np.asarray(cohort.projection("fused/umap"))
    idx = np.sort(np.random.default_rng(0).choice(len(latents), size=min(rows, len(latents)), replace=False))
    start = time.perf_counter()
    full = project(latents[idx], "umap_full", seed=0, progress=False).coords
    seconds = time.perf_counter() - start
    for name, coords, reference in (("built map", built[idx], full), ("full fit", full, None)):
        q = projection_quality(latents[idx], coords, k=15, sample=5000, seed=0, reference_coords=reference)
        agreement = f"  kNN agreement with the full fit {q['knn_agreement']:.3f}" if reference is not None else ""
        print(f"  fused/umap on {len(idx):,} rows, {name:9s}: trustworthiness {q['trustworthiness']:.3f}  "
              f"kNN preservation {q['knn_preservation']:.3f}{agreement}")
    print(f"  (full fit of {len(idx):,} rows: {seconds:.1f} s)")


def report(out: Path, full_fit_rows: int) -> None:
    """Each step's time, the servable and total times, and every projection's quality."""
    from lse_panel.analysis.projection import projection_quality
    from lse_panel.cohort.bundle import open_bundle

    manifest = json.loads((out / "manifest.json").read_text())
    steps = manifest["build"]["steps"]
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
    against_full_fit(cohort, full_fit_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 500_000])
    parser.add_argument("--existing", type=Path, nargs="*", default=[],
                        help="also report bundles built earlier (e.g. data/demo), without rebuilding them")
    parser.add_argument("--keep", type=Path, help="build here instead of a temporary directory")
    parser.add_argument("--full-fit-rows", type=int, default=50_000,
                        help="rows of the fused latent given a full umap-learn fit to compare the built map with")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="lse-bench-build-"))
    for size in args.sizes:
        out = root / f"cohort-{size}"
        wall, peak_gb = build(size, out)
        print(f"\n== {size:,} subjects: built in {wall:.1f} s, peak RSS of the build process {peak_gb:.2f} GB")
        report(out, args.full_fit_rows)
    for out in args.existing:
        print(f"\n== {out} (built earlier; step times from its manifest)")
        report(out, args.full_fit_rows)
    print(f"\nbundles in {root}")


if __name__ == "__main__":
    main()
