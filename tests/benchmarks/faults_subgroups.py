"""Fault injection, long run (on demand): SIGKILL a subgroup-saving process and an `lse import` many times.

    .venv/bin/python tests/benchmarks/faults_subgroups.py --save-kills 100 --import-kills 20 --seed 0

Saves: a worker saves, overwrites and deletes subgroups in a loop on a 2,000-subject bundle and is
killed after a random delay; after each kill every acknowledged change must be on disk, the change in
flight whole or absent, the members exact, and the explorer must load (`lse_panel/faults_subgroups.py`).
Imports: `lse import` of the example cohort (300 subjects, PCA maps) killed at random moments, the
bundle checked after each kill and rerun until one run finishes: it must equal an uninterrupted
import column for column (`lse_panel/faults.py`). Prints the counts; exit 1 on any loss.
`tests/cohort/test_store_faults.py` runs a handful of kills of each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lse_panel.faults import bundle_arrays, import_command, run_build_trials
from lse_panel.faults_subgroups import run_save_trials
from lse_panel.importing.example import write_example_cohort
from lse_panel.testing import tiny_cohort, write_cohort_bundle


def example_spec(folder: Path, subjects: int) -> Path:
    """The example cohort at ``folder`` with PCA maps only (a run of a few seconds)."""
    write_example_cohort(folder, n_subjects=subjects, n_records=10, latent_dim=8)
    spec = folder / "cohort.toml"
    spec.write_text(spec.read_text() + '\n[build]\nprojections = ["pca"]\n')
    return spec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save-kills", type=int, default=100)
    parser.add_argument("--import-kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subjects", type=int, default=300, help="subjects of the imported cohort")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    failed = False
    with tempfile.TemporaryDirectory(prefix="lse-faults-") as tmp:
        root = Path(tmp)
        if args.save_kills:
            bundle = write_cohort_bundle(tiny_cohort(2_000), root / "saves")
            start = time.monotonic()
            report = run_save_trials(bundle, kills=args.save_kills, rng=rng, max_delay_s=1.0)
            print(f"subgroup saves: {report.summary()} ({time.monotonic() - start:.0f} s)")
            for line in report.failures + report.leftovers_at_end:
                print("FAILURE:", line)
            failed |= bool(report.failures or report.leftovers_at_end)
        if args.import_kills:
            spec = example_spec(root / "example", args.subjects)
            command = import_command(spec)
            start = time.monotonic()
            subprocess.run(command(root / "reference"), check=True, capture_output=True)
            seconds = time.monotonic() - start
            print(f"uninterrupted import: {seconds:.1f} s ({args.subjects} subjects, PCA maps)")
            (root / "imports").mkdir()
            report = run_build_trials(root / "imports", bundle_arrays(root / "reference"), kills=args.import_kills,
                                      rng=rng, max_delay_s=seconds, command=command)  # fmt: skip
            print(f"lse import: {report.summary()} ({time.monotonic() - start:.0f} s)")
            for line in report.failures + report.leftover_files:
                print("FAILURE:", line)
            failed |= bool(report.failures or report.data_lost or report.leftover_files)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
