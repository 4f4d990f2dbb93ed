"""Fault injection, long run (on demand, not in `make bench`): SIGKILL `lse build` many times at random moments.

    .venv/bin/python tests/benchmarks/faults_build.py --kills 40 --seed 0

Prints the counts: kills injected; after each kill, how often the bundle did not exist yet, was refused as
half-built, or loaded with every column equal to an uninterrupted build's; reruns completed; bundles identical
to the uninterrupted build; data lost (must be 0). `tests/build/test_build_faults.py` runs a handful of kills.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lse_panel.faults import build_command, bundle_arrays, run_build_trials


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=40, help="SIGKILLs to deliver (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays (default: %(default)s)")
    parser.add_argument("--subjects", type=int, default=300, help="cohort size (default: %(default)s)")
    parser.add_argument("--projections", nargs="+", default=["pca"],
                        help="projections to build; add umap to cover the servable stage (slow: ~30 s a run)")
    args = parser.parse_args()
    settings = dict(subjects=args.subjects, seed=7, projections=tuple(args.projections))
    with tempfile.TemporaryDirectory(prefix="lse-faults-") as tmp:
        root = Path(tmp)
        start = time.monotonic()
        subprocess.run(build_command(root / "reference", **settings), check=True, capture_output=True)
        seconds = time.monotonic() - start
        print(f"uninterrupted build: {seconds:.1f} s ({args.subjects} subjects, {', '.join(args.projections)})")
        start = time.monotonic()
        report = run_build_trials(root, bundle_arrays(root / "reference"), kills=args.kills,
                                  rng=np.random.default_rng(args.seed), max_delay_s=seconds, **settings)
        print(f"{report.summary()} ({time.monotonic() - start:.0f} s)")
        for failure in report.failures:
            print("FAILURE:", failure)
        for path in report.leftover_files:
            print("LEFT BEHIND:", path)
    return 1 if report.failures or report.data_lost or report.leftover_files else 0


if __name__ == "__main__":
    sys.exit(main())
