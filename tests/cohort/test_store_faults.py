"""A process saving subgroups killed with SIGKILL at random moments: nothing acknowledged is lost, the app loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lse_panel.faults_subgroups import run_save_trials
from lse_panel.testing import tiny_cohort, write_cohort_bundle

pytestmark = pytest.mark.slow


def test_random_kills_during_saves_lose_nothing(tmp_path: Path) -> None:
    """A handful of kills here; `tests/benchmarks/faults_subgroups.py` runs many (counts in the README)."""
    bundle = write_cohort_bundle(tiny_cohort(1_000), tmp_path / "bundle")
    report = run_save_trials(bundle, kills=6, rng=np.random.default_rng(2024), max_delay_s=0.8)
    print(report.summary())
    assert report.kills == 6 and report.changes_acknowledged > 0
    assert not report.failures, report.failures
    assert report.in_flight_landed + report.in_flight_absent == report.kills
    assert report.app_loaded == report.kills
    assert not report.leftovers_at_end, report.leftovers_at_end
