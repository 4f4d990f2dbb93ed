"""One binning per phenotype: edges shared by every histogram, counts that match numpy, tidy frames."""

from __future__ import annotations

import numpy as np

from lse_panel.analysis.histograms import (
    bin_codes,
    bin_phenotype,
    category_frame,
    count_bins,
    histogram_edges,
    histogram_frame,
)


def test_bins_match_numpy_histogram_and_skip_missing() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=1_000).astype(np.float32)
    values[:7] = np.nan
    edges = histogram_edges(values, 12)
    index = bin_codes(values, edges)
    assert (index[:7] == -1).all() and index[7:].min() == 0 and index.max() == 11
    rows = np.arange(100, 600)
    expected, _ = np.histogram(values[rows], bins=edges)
    assert np.array_equal(count_bins(index, rows, 12), expected)
    mask = np.zeros(values.size, bool)
    mask[rows] = True
    assert np.array_equal(count_bins(index, mask, 12), expected)
    assert count_bins(index, None, 12).sum() == 993


def test_constant_and_empty_columns_still_get_edges() -> None:
    assert histogram_edges(np.full(5, 3.0), 4).tolist() == [2.5, 2.75, 3.0, 3.25, 3.5]
    assert len(histogram_edges(np.full(5, np.nan), 4)) == 5


def test_histogram_frame_densities_have_area_one() -> None:
    edges = np.array([0.0, 1.0, 3.0])
    frame = histogram_frame({"a": np.array([2, 2]), "b": np.array([0, 0])}, edges)
    a = frame[frame["group"] == "a"]
    assert np.isclose((a["density"] * (a["right"] - a["left"])).sum(), 1.0)
    assert a["n"].tolist() == [4, 4]
    assert (frame[frame["group"] == "b"]["density"] == 0).all()


def test_category_frame_proportions() -> None:
    frame = category_frame({"a": np.array([1, 3])}, ["no", "yes"])
    assert frame["proportion"].tolist() == [0.25, 0.75] and frame["category"].tolist() == ["no", "yes"]


def test_binning_of_a_phenotype_counts_like_numpy() -> None:
    values = np.array([0.0, 1.0, 2.0, np.nan, 10.0], dtype=np.float32)
    binning = bin_phenotype(values, "continuous", bins=5)
    assert binning.continuous and len(binning.edges) == 6 and binning.codes[3] == -1 and binning.codes[-1] == 4
    assert binning.cohort_counts.sum() == 4 and binning.n_bins == 5
    np.testing.assert_array_equal(binning.counts(np.array([0, 1])), np.histogram(values[:2], binning.edges)[0])
    mask = np.zeros(5, dtype=bool)
    mask[[0, 1]] = True
    np.testing.assert_array_equal(binning.counts(mask), binning.counts(np.array([0, 1])))


def test_categories_are_their_own_bins_and_missing_codes_are_left_out() -> None:
    binning = bin_phenotype(np.array([0, 1, 1, -1, 2], dtype=np.int8), "categorical", ("a", "b", "c"))
    assert not binning.continuous and binning.categories == ("a", "b", "c")
    assert binning.cohort_counts.tolist() == [1, 2, 1]
    frame = binning.frame({"g": binning.counts(np.array([1, 2, 3]))})
    assert frame["proportion"].tolist() == [0.0, 1.0, 0.0]
