"""The raw-source dispatch: the manifest's ``raw.source`` picks the reader, unknown sources say so."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.sources import open_raw_source
from lse_panel.synth import SyntheticCohort
from lse_panel.testing import tiny_cohort


def test_synthetic_source_regenerates_records() -> None:
    cohort = tiny_cohort(20)
    generator = SyntheticCohort(seed=3, mri_shape=(4, 12, 12))
    cohort.manifest["raw"] = generator.to_json()
    source = open_raw_source(cohort)
    assert isinstance(source, SyntheticCohort)
    records = source.raw(np.array([1, 2]))
    expected = generator.raw(np.array([1, 2]))
    assert set(records) == set(expected)
    for name in records:
        np.testing.assert_array_equal(records[name], expected[name])


def test_no_raw_entry_means_no_source_and_unknown_ones_are_named() -> None:
    cohort = tiny_cohort(20)
    assert open_raw_source(cohort) is None
    cohort.manifest["raw"] = {"source": "tape"}
    with pytest.raises(ValueError, match="raw.source is 'tape'"):
        open_raw_source(cohort)
