"""One binning per phenotype: edges shared by every histogram, counts that match numpy, tidy frames."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.histograms import (
    CodeMatrix,
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


def test_code_matrix_counts_every_phenotype_like_count_bins_on_each() -> None:
    rng = np.random.default_rng(3)
    n = 5_001
    age = rng.normal(60, 8, n)
    age[rng.random(n) < 0.05] = np.nan
    sex = rng.integers(0, 2, n)
    site = rng.integers(-1, 6, n)  # -1 missing, 5 beyond the 5 declared categories
    edges = histogram_edges(age, 30)
    codes = {"age": bin_codes(age, edges), "sex": sex, "site": site}
    n_bins = {"age": 30, "sex": 2, "site": 5}
    matrix = CodeMatrix.build(codes, n_bins)
    for share in (0.0, 0.1, 0.5, 0.9, 1.0):  # both sides of one half: the complement is counted past it
        mask = rng.random(n) < share
        counted = matrix.counts(mask)
        assert list(counted) == ["age", "sex", "site"]
        for name in codes:
            np.testing.assert_array_equal(counted[name], count_bins(codes[name], mask, n_bins[name]))
    np.testing.assert_array_equal(matrix.counts(np.ones(n, bool))["site"], count_bins(site, None, 5))


def test_code_matrix_refuses_a_mask_of_another_length() -> None:
    matrix = CodeMatrix.build({"sex": np.array([0, 1, 1])}, {"sex": 2})
    with pytest.raises(ValueError, match="mask has .*3 rows"):
        matrix.counts(np.ones(4, bool))

