"""Phenotype table: schema, determinism, the published reference ranges, and physiological structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lse_panel.synth.phenotypes import HIDDEN_FACTORS, PHENOTYPES, generate_phenotypes, hidden_factors

N = 50_000  # ≥ 20,000 per sex, as cohort_reference.md asks


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return generate_phenotypes(np.arange(N), seed=0)


def test_schema(table: pd.DataFrame) -> None:
    assert list(table.columns) == list(PHENOTYPES)
    for name, spec in PHENOTYPES.items():
        assert str(table[name].dtype) == spec.dtype, name
        if spec.categories:
            assert set(np.unique(table[name])) <= set(range(len(spec.categories))), name
    assert not table.isna().any().any()
    assert PHENOTYPES["sex"].categories == ("female", "male")


def test_rows_depend_only_on_seed_and_id() -> None:
    ids = np.array([5, 123_456, 7, 99])
    full = generate_phenotypes(ids, 3)
    alone = generate_phenotypes(ids[[2]], 3)
    pd.testing.assert_frame_equal(full.iloc[[2]].reset_index(drop=True), alone)
    reordered = generate_phenotypes(ids[::-1], 3)
    pd.testing.assert_frame_equal(full.iloc[::-1].reset_index(drop=True), reordered)
    assert not generate_phenotypes(ids, 4).equals(full)


# (column, sex or None, published mean, published SD) from shared/reference/cohort_reference.md.
REFERENCE = [
    ("age", None, 58.1, 8.0),
    ("bmi", None, 27.5, 4.4),
    ("heart_rate", None, 71.0, 10.0),
    ("lvef", "female", 61.0, 5.0),
    ("lvef", "male", 58.0, 5.0),
    ("lv_mass_index", "female", 42.0, 7.0),
    ("lv_mass_index", "male", 53.0, 9.0),
    ("pr_interval", "female", 158.0, 34.0),
    ("qrs_duration", "female", 85.0, 8.0),
    ("qtc", "female", 413.0, 14.0),
]


@pytest.mark.parametrize(("column", "sex", "mean", "sd"), REFERENCE, ids=[f"{c}-{s or 'all'}" for c, s, *_ in REFERENCE])
def test_reference_ranges(table: pd.DataFrame, column: str, sex: str | None, mean: float, sd: float) -> None:
    values = table[column] if sex is None else table.loc[table["sex"] == ("female", "male").index(sex), column]
    assert len(values) >= 20_000
    assert abs(values.mean() - mean) <= 0.5 * sd, f"{column} mean {values.mean():.1f} vs {mean}"
    assert 1 / 1.5 <= values.std() / sd <= 1.5, f"{column} SD {values.std():.1f} vs {sd}"


def test_share_of_men(table: pd.DataFrame) -> None:
    assert abs(table["sex"].mean() - 0.473) < 0.01


def test_physiological_structure(table: pd.DataFrame) -> None:
    t = table.astype(np.float64)
    corr = t.corr()
    for driver in ("sex", "bsa", "sbp", "age"):
        assert corr.loc["lv_mass", driver] > 0.05, driver
    assert corr.loc["hypertension", "age"] > 0.1 and corr.loc["hypertension", "bmi"] > 0.1
    assert corr.loc["qrs_duration", "lv_mass"] > 0.1
    assert 0.02 <= t["af"].mean() <= 0.05
    af_by_age = t.groupby(pd.cut(t["age"], [0, 55, 65, 100]), observed=True)["af"].mean()
    assert af_by_age.is_monotonic_increasing and af_by_age.iloc[-1] > 2 * af_by_age.iloc[0]
    assert 0.01 <= t["lvh"].mean() <= 0.10
    # LVH is exactly the published thresholds on the indexed mass.
    thr = np.where(t["sex"] == 1, 72.0, 55.0)
    np.testing.assert_array_equal(t["lvh"].to_numpy() == 1, t["lv_mass_index"].to_numpy() > thr)
    assert t.loc[t["lvh"] == 1, "lvef"].mean() < t.loc[t["lvh"] == 0, "lvef"].mean()
    assert t.loc[t["af"] == 1, "lvef"].mean() < t.loc[t["af"] == 0, "lvef"].mean()
    # Derived columns agree with their definitions.
    np.testing.assert_allclose(t["bmi"], t["weight"] / (t["height"] / 100) ** 2, rtol=1e-3)
    np.testing.assert_allclose(t["bsa"], np.sqrt(t["height"] * t["weight"] / 3600), rtol=1e-3)
    np.testing.assert_allclose(t["lv_mass"], t["lv_mass_index"] * t["bsa"], rtol=1e-3)
    np.testing.assert_allclose(t["lvesv"], t["lvedv"] * (1 - t["lvef"] / 100), rtol=1e-3)


def test_hidden_factors_are_deterministic() -> None:
    ids = np.arange(100)
    a, b = hidden_factors(ids, 1), hidden_factors(ids[50:], 1)
    assert set(a) == set(HIDDEN_FACTORS)
    for name in HIDDEN_FACTORS:
        np.testing.assert_array_equal(a[name][50:], b[name])
        assert np.isfinite(a[name]).all()
