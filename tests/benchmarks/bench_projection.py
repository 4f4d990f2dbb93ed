"""Benchmark the projections: full vs scalable UMAP quality at 50k, times at 500k, the network's cost at 10M.

Run: ``.venv/bin/python tests/benchmarks/bench_projection.py [--full-500k] [--n-10m 10000000]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Iterator

import numpy as np
import psutil

from lse_panel.analysis.projection import UMAP_LANDMARKS, projection_quality
from lse_panel.model.projection import project


def make_latents(n: int, d: int = 64, *, seed: int = 0, n_clusters: int = 10) -> np.ndarray:
    """Latents shaped like a model's: a continuous 3-factor manifold plus a 10-component Gaussian mixture.

    The structure (cluster centres, spreads and weights, the manifold's map) is fixed; ``seed``
    draws the subjects, so chunks with different seeds come from the same population.
    """
    rng = np.random.default_rng(12345)
    centres = rng.normal(size=(n_clusters, d)) * 2.0
    spreads = rng.uniform(0.5, 1.5, size=n_clusters)
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    w1 = rng.normal(size=(3, 32))
    w2 = rng.normal(size=(32, d)) / np.sqrt(32) * 3
    r = np.random.default_rng(seed)
    labels = r.choice(n_clusters, size=n, p=weights)
    factors = r.uniform(-2, 2, size=(n, 3))  # e.g. age, size, heart rate: smooth variation
    x = np.tanh(factors @ w1) @ w2 + centres[labels] + r.normal(size=(n, d)) * spreads[labels, None]
    return x.astype(np.float32)


def iter_latent_chunks(n: int, chunk: int, *, seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` latents a chunk at a time, so that 10M rows never sit in memory together."""
    for i, start in enumerate(range(0, n, chunk)):
        yield make_latents(min(chunk, n - start), seed=seed * 1_000_003 + i)


def peak_rss_gb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rss_gb() -> float:
    return psutil.Process().memory_info().rss / 2**30


def quality(x: np.ndarray, coords: np.ndarray, sample: int, reference: np.ndarray | None = None) -> str:
    """Trustworthiness/kNN preservation[/agreement with the reference] in both scopes, k = 15."""
    parts = []
    # The among-all scope costs sample × n × d, so it gets a fifth of the sample.
    for scope, m in (("sample", sample), ("all", max(100, sample // 5))):
        q = projection_quality(x, coords, sample=m, scope=scope, reference_coords=reference)
        values = "/".join(f"{q[key]:.3f}" for key in ("trustworthiness", "knn_preservation", "knn_agreement") if key in q)
        parts.append(f"{scope}[{q['sample']}] {values}")
    return "; ".join(parts)


def report(label: str, seconds: float, extra: str = "") -> None:
    print(f"  {label:<44s} {seconds:8.1f} s   rss {rss_gb():5.2f} GB (peak {peak_rss_gb():5.2f})  {extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-small", type=int, default=50_000, help="cohort fitted fully, for quality")
    parser.add_argument("--small-landmarks", type=str, default="5000,20000,40000", help="landmark counts tried at n-small")
    parser.add_argument("--n-large", type=int, default=500_000, help="cohort for the time figures")
    parser.add_argument("--full-500k", action="store_true", help="also fit UMAP on all of n-large (~2-4 min)")
    parser.add_argument("--n-10m", type=int, default=10_000_000, help="rows for the network's application")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--sample", type=int, default=5000, help="rows the quality metrics use")
    args = parser.parse_args()

    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (other work shares these cores)")
    print(f"python {sys.version.split()[0]}; seeds fixed (umap-learn single-threaded, torch 1 thread train / 2 apply)")

    print("\n== numba warm-up (paid once per process) ==")
    t = time.perf_counter()
    project(make_latents(5000, seed=99), "umap_full", progress=False)
    report("first UMAP fit of 5k (mostly JIT)", time.perf_counter() - t)

    n = args.n_small
    print(f"\n== quality at {n:,} (64-d, sample {args.sample}, k=15) ==")
    x = make_latents(n, seed=1)
    full = project(x, "umap_full", progress=False)
    report("umap_full", full.elapsed_s, quality(x, full.coords, args.sample))
    pca = project(x, "pca", progress=False)
    report("pca", pca.elapsed_s, quality(x, pca.coords, args.sample, full.coords))
    for n_landmarks in (int(v) for v in args.small_landmarks.split(",")):
        r = project(x, "umap", progress=False, full_fit_max=0, n_landmarks=n_landmarks)
        timings = ", ".join(f"{k} {v:.1f}" for k, v in r.timings.items())
        report(f"umap landmarks {n_landmarks:,} ({timings})", r.elapsed_s, quality(x, r.coords, args.sample, full.coords))
    del x, full, pca, r

    if args.skip_large:
        return
    n = args.n_large
    print(f"\n== time at {n:,} ==")
    x = make_latents(n, seed=2)
    report(f"latents {x.nbytes / 2**20:.0f} MB generated", 0.0)
    pca = project(x, "pca", progress=False)
    report("pca", pca.elapsed_s, quality(x, pca.coords, args.sample))
    scalable = project(x, "umap", progress=False)
    timings = ", ".join(f"{k} {v:.1f}" for k, v in scalable.timings.items())
    report(f"umap scalable, {UMAP_LANDMARKS:,} landmarks ({timings})", scalable.elapsed_s,
           quality(x, scalable.coords, args.sample))
    if args.full_500k:
        full = project(x, "umap_full", progress=False, keep_model=False)
        report("umap_full", full.elapsed_s, quality(x, full.coords, args.sample))
        report("umap scalable vs umap_full", 0.0, quality(x, scalable.coords, args.sample, full.coords))
        del full
    del x

    n, chunk = args.n_10m, 262_144
    print(f"\n== applying the fitted maps to {n:,} rows, generated in chunks of {chunk:,} ==")
    t_net = t_pca = t_gen = 0.0
    t = time.perf_counter()
    for latents in iter_latent_chunks(n, chunk, seed=3):
        t0 = time.perf_counter()
        scalable.transform(latents)
        t1 = time.perf_counter()
        pca.transform(latents)
        t_pca += time.perf_counter() - t1
        t_net += t1 - t0
    t_gen = time.perf_counter() - t - t_net - t_pca
    report("network (umap scalable) apply", t_net)
    report("pca apply", t_pca)
    report("(generating the rows, not counted)", t_gen)
    fixed = scalable.timings["fit_landmarks"] + scalable.timings["train"]
    report(f"umap scalable total at {n:,} = fit + train + apply", fixed + t_net)


if __name__ == "__main__":
    main()
