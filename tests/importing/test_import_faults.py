"""`lse import` killed with SIGKILL at random moments: refused as half-built or intact after each kill, identical once rerun."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from lse_panel.faults import bundle_arrays, import_command, run_build_trials

pytestmark = pytest.mark.slow


def test_random_kills_of_an_import_lose_nothing(example_dir: Path, tmp_path: Path) -> None:
    """Two kills here; `tests/benchmarks/faults_subgroups.py --import-kills 20` runs many."""
    folder = tmp_path / "example"
    shutil.copytree(example_dir, folder)
    spec = folder / "cohort.toml"
    spec.write_text(spec.read_text() + '\n[build]\nprojections = ["pca"]\n')
    command = import_command(spec)
    start = time.monotonic()
    subprocess.run(command(tmp_path / "reference"), check=True, capture_output=True)
    seconds = time.monotonic() - start
    (tmp_path / "trials").mkdir()
    report = run_build_trials(tmp_path / "trials", bundle_arrays(tmp_path / "reference"), kills=2,
                              rng=np.random.default_rng(7), max_delay_s=seconds, command=command)  # fmt: skip
    print(report.summary())
    assert not report.failures, report.failures
    assert report.nothing_written + report.refused_clearly + report.loaded_intact == report.kills
    assert report.reruns_completed == report.trials and report.data_lost == 0
    assert not report.leftover_files, report.leftover_files
