"""Group comparison: effect sizes and tests against scipy on known data, BH q-values, ordering, privacy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lse_panel.analysis.compare import (
    COLUMNS,
    TABLE_COLUMNS,
    PhenotypeSums,
    compare_groups,
    compare_with_reference,
    distribution_frames,
)
from lse_panel.analysis.histograms import bin_phenotype
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.testing import tiny_cohort


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 5_000
    group = rng.random(n) < 0.2
    table = pd.DataFrame(
        {
            "lv_mass": np.where(group, rng.normal(140, 20, n), rng.normal(120, 15, n)).astype(np.float32),
            "age": rng.normal(58, 8, n),
            "af": (rng.random(n) < np.where(group, 0.15, 0.05)).astype(np.int8),
            "sex": (rng.random(n) < 0.5).astype(np.int8),
            "smoking": rng.integers(0, 3, n).astype(np.int8),
        }
    )
    table.loc[rng.choice(n, 100, replace=False), "age"] = np.nan
    table.loc[rng.choice(n, 40, replace=False), "af"] = -1
    specs = {"lv_mass": "continuous", "age": "continuous", "af": "binary", "sex": "binary", "smoking": "categorical"}
    return table, specs, np.flatnonzero(group), np.flatnonzero(~group)


def test_continuous_matches_scipy_welch_and_cohens_d(data):
    table, specs, a, b = data
    frame = compare_groups(table, specs, a, b).set_index("phenotype")
    for name in ("lv_mass", "age"):
        va = table[name].to_numpy(np.float64)[a]
        vb = table[name].to_numpy(np.float64)[b]
        va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
        row = frame.loc[name]
        welch = stats.ttest_ind(va, vb, equal_var=False)
        assert row.statistic == pytest.approx(welch.statistic, rel=1e-9)
        assert row.p_value == pytest.approx(welch.pvalue, rel=1e-6, abs=1e-300)
        pooled = math.sqrt(((va.size - 1) * va.var(ddof=1) + (vb.size - 1) * vb.var(ddof=1)) / (va.size + vb.size - 2))
        assert row.effect == pytest.approx((va.mean() - vb.mean()) / pooled, rel=1e-9)
        assert row.mean_a == pytest.approx(va.mean(), rel=1e-12)
        assert row.sd_b == pytest.approx(vb.std(ddof=1), rel=1e-9)
        assert (row.n_a, row.n_b) == (va.size, vb.size)
        assert row.test == "welch_t" and row.effect_kind == "cohen_d"
    assert frame.loc["lv_mass", "effect"] > 1.0  # built in: ~20 / 16


def test_binary_matches_chi_square_and_two_proportion_z(data):
    table, specs, a, b = data
    row = compare_groups(table, specs, a, b).set_index("phenotype").loc["af"]
    va, vb = table["af"].to_numpy()[a], table["af"].to_numpy()[b]
    va, vb = va[va >= 0], vb[vb >= 0]
    pa, pb = va.mean(), vb.mean()
    assert row.mean_a == pytest.approx(pa) and row.difference == pytest.approx(pa - pb)
    assert row.effect == pytest.approx(2 * np.arcsin(np.sqrt(pa)) - 2 * np.arcsin(np.sqrt(pb)))
    table2 = [[np.sum(va == 0), np.sum(va == 1)], [np.sum(vb == 0), np.sum(vb == 1)]]
    chi2 = stats.chi2_contingency(table2, correction=False)
    assert row.statistic == pytest.approx(chi2.statistic, rel=1e-9)
    pooled = (va.sum() + vb.sum()) / (va.size + vb.size)
    z = (pa - pb) / math.sqrt(pooled * (1 - pooled) * (1 / va.size + 1 / vb.size))
    assert row.statistic == pytest.approx(z * z, rel=1e-9)
    assert row.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-6)


def test_categorical_uses_chi_square_and_cramers_v(data):
    table, specs, a, b = data
    row = compare_groups(table, specs, a, b).set_index("phenotype").loc["smoking"]
    v = table["smoking"].to_numpy()
    counts = np.array([np.bincount(v[a], minlength=3), np.bincount(v[b], minlength=3)])
    chi2 = stats.chi2_contingency(counts, correction=False)
    assert row.statistic == pytest.approx(chi2.statistic, rel=1e-9)
    assert row.p_value == pytest.approx(chi2.pvalue, rel=1e-9)
    assert row.effect == pytest.approx(stats.contingency.association(counts, method="cramer"), rel=1e-9)


def test_q_values_sorting_and_columns(data):
    table, specs, a, b = data
    frame = compare_groups(table, specs, a, b)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == len(specs)
    np.testing.assert_allclose(
        frame["q_value"], stats.false_discovery_control(frame["p_value"].to_numpy(), method="bh"), rtol=1e-12
    )
    effects = frame["effect"].abs().to_numpy()
    assert np.all(np.diff(effects) <= 0)
    assert frame.iloc[0]["phenotype"] == "lv_mass"


def test_group_b_defaults_to_the_complement_and_masks_work(data):
    table, specs, a, b = data
    explicit = compare_groups(table, specs, a, b)
    mask = np.zeros(len(table), dtype=bool)
    mask[a] = True
    pd.testing.assert_frame_equal(compare_groups(table, specs, a), explicit)
    pd.testing.assert_frame_equal(compare_groups(table, specs, mask), explicit)


def test_degenerate_groups_give_nan_with_a_reason():
    table = {"x": np.array([1.0, 1.0, 1.0, 1.0]), "y": np.array([0, 0, 0, 0], dtype=np.int8), "z": np.arange(4.0)}
    specs = {"x": "continuous", "y": "binary", "z": "continuous"}
    frame = compare_groups(table, specs, [0, 1], [2, 3]).set_index("phenotype")
    assert math.isnan(frame.loc["x", "p_value"]) and "no variation" in frame.loc["x", "reason"]
    assert math.isnan(frame.loc["y", "p_value"]) and "one value" in frame.loc["y", "reason"]
    assert frame.loc["y", "difference"] == 0.0
    assert np.isfinite(frame.loc["z", "p_value"])
    frame = compare_groups(table, specs, [0], [1, 2, 3]).set_index("phenotype")
    assert math.isnan(frame.loc["z", "effect"]) and "fewer than 2" in frame.loc["z", "reason"]
    empty = compare_groups(table, specs, np.array([], dtype=np.int64))
    assert (empty["n_a"] == 0).all() and empty["p_value"].isna().all()


def test_compare_errors_name_the_problem(data):
    table, specs, a, b = data
    with pytest.raises(ValueError, match="not in the table"):
        compare_groups(table, {"height": "continuous"}, a, b)
    with pytest.raises(ValueError, match="'continuous', 'binary' or 'categorical'"):
        compare_groups(table, {"age": "ordinal"}, a, b)
    with pytest.raises(ValueError, match="outside"):
        compare_groups(table, specs, np.array([10**9]))
    with pytest.raises(ValueError, match="non-integer"):
        compare_groups({"f": np.array([0.5, 1.0, 0.0])}, {"f": "binary"}, [0])


# -- the comparison pane's computations, on per-group statistics ---------------------------------
def test_compare_with_reference_hides_small_groups_and_statistics_subtract() -> None:
    cohort = tiny_cohort(300)
    specs = cohort.phenotype_specs
    sums = PhenotypeSums.build(cohort.phenotype_columns, specs)
    total = sums.rows_sum(np.arange(300))
    reference = total - sums.rows_sum(np.arange(60))  # everyone but the first 60
    policy = PrivacyPolicy(min_group_size=10)
    table = compare_with_reference({"a": sums.rows_sum(np.arange(60)), "tiny": sums.rows_sum(np.arange(4))}, reference,
                                   specs, reference_label="rest", policy=policy)  # fmt: skip
    assert list(table.columns) == TABLE_COLUMNS and set(table["reference"]) == {"rest"}
    assert table.loc[table["group"] == "tiny", "hidden"].all() and table.loc[table["group"] == "tiny", "effect"].isna().all()
    direct = compare_groups(cohort.phenotype_columns, specs, np.arange(60), np.arange(60, 300))
    pd.testing.assert_frame_equal(
        table[table["group"] == "a"][COLUMNS].reset_index(drop=True), direct, check_exact=False, rtol=1e-9
    )
    binning = bin_phenotype(cohort.phenotype("age"), "continuous", bins=12)
    rest_counts = binning.cohort_counts - binning.counts(np.arange(60))
    frame, hidden = distribution_frames(binning, {"rest": rest_counts, "tiny": binning.counts(np.arange(4))}, policy=policy)
    assert set(frame["group"]) == {"rest"} and "tiny" in hidden
    np.testing.assert_array_equal(frame["count"].to_numpy(), np.histogram(cohort.phenotype("age")[60:], binning.edges)[0])


def test_phenotype_statistics_of_parts_add_up() -> None:
    cohort = tiny_cohort(200)
    sums = PhenotypeSums.build(cohort.phenotype_columns, cohort.phenotype_specs)
    whole = sums.rows_sum(np.arange(200))
    parts = sums.rows_sum(np.arange(80)) + sums.rows_sum(np.arange(80, 200))
    for name, values in whole.values.items():
        np.testing.assert_allclose(parts.values[name], values, rtol=1e-12, atol=1e-9)
    other = PhenotypeSums.build(cohort.phenotype_columns, {"age": "continuous"})
    with pytest.raises(ValueError, match="different phenotypes"):
        whole - other.rows_sum(np.arange(3))
