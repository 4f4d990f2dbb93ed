"""`lse build` killed with SIGKILL at random moments: refused as half-built or intact after each kill, identical once rerun."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from lse_panel.faults import build_command, bundle_arrays, run_build_trials

pytestmark = pytest.mark.slow
SETTINGS = dict(subjects=300, seed=11, projections=("pca",))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], float]:
    """An uninterrupted build's columns, and how long it took (the kills are drawn within that time)."""
    out = tmp_path_factory.mktemp("reference") / "cohort"
    start = time.monotonic()
    subprocess.run(build_command(out, **SETTINGS), check=True, capture_output=True)
    return bundle_arrays(out), time.monotonic() - start


def test_random_kills_lose_nothing(reference, tmp_path: Path) -> None:
    """A handful of kills here; `tests/benchmarks/faults_build.py` runs many (see its output in the README)."""
    digest, seconds = reference
    report = run_build_trials(tmp_path, digest, kills=3, rng=np.random.default_rng(2024), max_delay_s=seconds,
                              **SETTINGS)
    print(report.summary())
    assert report.kills >= 3
    assert not report.failures, report.failures
    assert report.nothing_written + report.refused_clearly + report.loaded_intact == report.kills
    assert report.reruns_completed == report.trials and report.data_lost == 0
    assert not report.leftover_files, report.leftover_files
