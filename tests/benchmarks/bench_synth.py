"""Benchmark the synthetic cohort: phenotype table at 500k, raw ECG/MRI throughput (run as a script)."""

from __future__ import annotations

import time

import numpy as np

from lse_panel.synth import SyntheticCohort, generate_ecg, generate_mri, generate_phenotypes


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(n_table: int = 500_000, batch: int = 1000, repeats: int = 5) -> None:
    """Print timings; each figure is the best of ``repeats`` after one warm-up call."""
    ids = np.arange(n_table)
    generate_phenotypes(ids[:10], 0)
    t = _best(lambda: generate_phenotypes(ids, 0), 3)
    print(f"phenotype table, {n_table:,} subjects: {t:.2f} s")

    cohort = SyntheticCohort(seed=0)
    bids = np.arange(10_000, 10_000 + batch)
    ph = cohort.phenotypes(bids)
    cohort.raw(bids[:4])  # compile / load the MRI kernel, fill the noise banks
    for name, fn in [
        ("ECG", lambda: generate_ecg(ph, bids, 0)),
        ("MRI", lambda: generate_mri(ph, bids, 0, shape=cohort.mri_shape)),
        ("ECG+MRI (raw)", lambda: cohort.raw(bids, ph)),
    ]:
        t = _best(fn, repeats)
        print(f"{name:14s} batch {batch}: {t * 1000:7.1f} ms  -> {batch / t:8.0f} subjects/s")


if __name__ == "__main__":
    main()
