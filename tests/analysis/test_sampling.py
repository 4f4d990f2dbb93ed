"""The one seeded row sampler: from a count or from given rows, capped, sorted, reproducible."""

from __future__ import annotations

import numpy as np

from lse_panel.analysis.sampling import sample_rows


def test_a_count_gives_a_sorted_seeded_subset_of_its_range() -> None:
    rows = sample_rows(1_000, 50, seed=3)
    assert rows.dtype == np.int64 and len(rows) == 50 and len(np.unique(rows)) == 50
    assert np.all(np.diff(rows) > 0) and rows.min() >= 0 and rows.max() < 1_000
    np.testing.assert_array_equal(rows, sample_rows(1_000, 50, seed=3))
    assert not np.array_equal(rows, sample_rows(1_000, 50, seed=4))


def test_given_rows_are_sampled_from_and_kept_whole_when_few() -> None:
    selection = np.arange(0, 10_000, 7, dtype=np.int64)
    rows = sample_rows(selection, 100, seed=1)
    assert len(rows) == 100 and np.isin(rows, selection).all() and np.all(np.diff(rows) > 0)
    kept = sample_rows(selection, None)
    np.testing.assert_array_equal(kept, selection)
    kept[0] = -1  # a copy: the caller's selection is untouched
    assert selection[0] == 0


def test_sampling_from_a_count_equals_sampling_from_its_range() -> None:
    np.testing.assert_array_equal(sample_rows(500, 20, seed=9), sample_rows(np.arange(500), 20, seed=9))
