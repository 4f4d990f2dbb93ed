"""Subgroup metrics match scikit-learn; their intervals behave; undefined cases never raise."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score

from lse_panel.analysis.metric_statistics import prepare_metrics
from lse_panel.analysis.metrics import classification_metrics, regression_metrics, subgroup_metrics

TOL = 1e-9


def _regression_data(n, rng, noise=1.0):
    y = rng.normal(50, 10, n)
    return y, y + rng.normal(0, 10 * noise, n)


def _classification_data(n, rng, prevalence=0.2, ties=False):
    y = (rng.random(n) < prevalence).astype(np.int8)
    s = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.2, n))))
    if ties:
        s = np.round(s, 1)  # many tied scores, some exactly at the 0.5 threshold
    return y, s


# ----------------------------------------------------------------------------- point metrics


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y, p = _regression_data(int(rng.integers(2, 3000)), rng, noise=rng.uniform(0.1, 3))
    got = regression_metrics(y, p)
    assert got["r2"] == pytest.approx(r2_score(y, p), abs=TOL)
    assert got["mae"] == pytest.approx(mean_absolute_error(y, p), abs=TOL)
    assert got["n"] == y.size and got["reason"] == ""


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_classification_metrics_match_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    y, s = _classification_data(int(rng.integers(10, 3000)), rng, prevalence=rng.uniform(0.05, 0.6), ties=ties)
    got = classification_metrics(y, s)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=TOL)
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, s >= 0.5), abs=TOL)
    assert got["n"] == y.size and got["n_pos"] == int(y.sum())


def test_missing_values_are_dropped_pairwise():
    y = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    p = np.array([1.5, np.nan, 3.0, 3.0, 5.5])
    got = regression_metrics(y, p)
    keep = [0, 3, 4]
    assert got["n"] == 3
    assert got["r2"] == pytest.approx(r2_score(y[keep], p[keep]), abs=TOL)
    labels = np.array([0, 1, -1, 1, 0, 1], dtype=np.int8)  # -1: missing code
    scores = np.array([0.2, 0.7, 0.9, np.nan, 0.6, 0.4])
    got = classification_metrics(labels, scores)
    keep = [0, 1, 4, 5]
    assert got["n"] == 4 and got["n_pos"] == 2
    assert got["auroc"] == pytest.approx(roc_auc_score(labels[keep], scores[keep]), abs=TOL)


def test_undefined_metrics_are_nan_with_a_reason():
    got = regression_metrics([1.0], [2.0])
    assert math.isnan(got["r2"]) and "n=1" in got["reason"]
    got = regression_metrics([3.0, 3.0, 3.0], [1.0, 2.0, 3.0])
    assert math.isnan(got["r2"]) and "constant" in got["reason"] and got["mae"] == pytest.approx(1.0)
    got = regression_metrics([], [])
    assert math.isnan(got["r2"]) and math.isnan(got["mae"]) and got["n"] == 0
    got = classification_metrics([1, 1, 1], [0.2, 0.5, 0.9])
    assert math.isnan(got["auroc"]) and math.isnan(got["balanced_accuracy"]) and "one class" in got["reason"]
    got = classification_metrics([], [])
    assert math.isnan(got["auroc"]) and got["n"] == 0
    with pytest.raises(ValueError, match="different lengths"):
        regression_metrics([1.0, 2.0], [1.0])


# ----------------------------------------------------------------------------- subgroup metrics


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(7)
    n = 6_000
    table = pd.DataFrame(
        {
            "age": rng.normal(58, 8, n).astype(np.float32),
            "lvef": rng.normal(60, 5, n),
            "af": (rng.random(n) < 0.1).astype(np.int8),
            "sex": (rng.random(n) < 0.5).astype(np.int8),
        }
    )
    table.loc[rng.choice(n, 200, replace=False), "lvef"] = np.nan
    table.loc[rng.choice(n, 50, replace=False), "sex"] = -1  # missing code
    tasks = {"age": "regression", "lvef": "regression", "af": "classification", "sex": "classification"}
    predictions = {}
    for k, noise in {"ecg": 1.0, "mri": 0.5, "fused": 0.3}.items():
        per = {}
        for name, task in tasks.items():
            truth = table[name].to_numpy(np.float64)
            if task == "regression":
                per[name] = (truth + noise * np.nanstd(truth) * rng.normal(size=n)).astype(np.float32)
            else:
                logit = (2 * truth - 1) * 1.5 + 2 * noise * rng.normal(size=n)
                per[name] = np.round(1 / (1 + np.exp(-logit)), 2).astype(np.float32)  # ties on purpose
        predictions[k] = per
    predictions["mri"]["age"][:10] = np.nan  # a latent missing for a few subjects
    selection = np.sort(rng.choice(n, 700, replace=False))
    rest = np.setdiff1d(np.arange(n), selection)
    groups = {"selection": selection, "rest": rest, "all": np.arange(n), "tiny": selection[:1]}
    return table, tasks, predictions, groups


def test_subgroup_metrics_match_sklearn_for_every_cell(cohort):
    table, tasks, predictions, groups = cohort
    frame = subgroup_metrics(table, tasks, predictions, groups, intervals=False)
    assert list(frame.columns) == [
        "phenotype", "task", "latent", "group", "metric", "value", "ci_low", "ci_high", "n", "n_pos", "reason"
    ]  # fmt: skip
    assert len(frame) == len(tasks) * len(predictions) * len(groups) * 2
    for row in frame.itertuples():
        idx = groups[row.group]
        y = table[row.phenotype].to_numpy(np.float64)[idx]
        p = predictions[row.latent][row.phenotype].astype(np.float64)[idx]
        if row.task == "regression":
            ok = np.isfinite(y) & np.isfinite(p)
            y, p = y[ok], p[ok]
            # MAE is defined for one subject, R² needs two.
            enough = y.size >= (2 if row.metric == "r2" else 1)
            expected = {"r2": r2_score, "mae": mean_absolute_error}[row.metric](y, p) if enough else math.nan
        else:
            ok = ((y == 0) | (y == 1)) & np.isfinite(p)
            y, p = y[ok], p[ok]
            if np.unique(y).size < 2:
                expected = math.nan
            elif row.metric == "auroc":
                expected = roc_auc_score(y, p)
            else:
                expected = balanced_accuracy_score(y, p >= 0.5)
            assert row.n_pos == int(y.sum())
        assert row.n == y.size
        if math.isnan(expected):
            assert math.isnan(row.value) and row.reason
        else:
            assert row.value == pytest.approx(expected, abs=TOL), row
    assert frame["ci_low"].isna().all()


def test_subgroup_metrics_prepared_and_mask_groups_give_the_same_table(cohort):
    table, tasks, predictions, groups = cohort
    prepared = prepare_metrics(table, tasks, predictions)
    masks = {}
    for name, idx in groups.items():
        mask = np.zeros(len(table), dtype=bool)
        mask[idx] = True
        masks[name] = mask
    a = subgroup_metrics(table, tasks, predictions, groups, intervals=False)
    b = subgroup_metrics(table, tasks, predictions, masks, prepared=prepared, intervals=False)
    pd.testing.assert_frame_equal(a, b)


def test_subgroup_metrics_more_than_eight_groups(cohort):
    table, tasks, predictions, groups = cohort
    many = {f"g{i}": groups["selection"][i::10] for i in range(10)} | {"all": groups["all"]}
    frame = subgroup_metrics(table, {"age": "regression"}, predictions, many, intervals=False)
    assert set(frame["group"]) == set(many)
    y = table["age"].to_numpy(np.float64)
    p = predictions["ecg"]["age"].astype(np.float64)
    row = frame.query("group == 'g9' and latent == 'ecg' and metric == 'r2'").iloc[0]
    idx = many["g9"]
    assert row.value == pytest.approx(r2_score(y[idx], p[idx]), abs=TOL)


def test_subgroup_metrics_intervals(cohort):
    table, tasks, predictions, groups = cohort
    frame = subgroup_metrics(table, tasks, predictions, {"selection": groups["selection"], "all": groups["all"]})
    defined = frame.dropna(subset=["value"])
    assert defined["ci_low"].notna().all()
    assert (defined["ci_low"] <= defined["value"] + 1e-12).all()
    assert (defined["value"] <= defined["ci_high"] + 1e-12).all()
    width = (frame["ci_high"] - frame["ci_low"]).to_numpy()
    sel = (frame["group"] == "selection").to_numpy()
    assert np.nanmedian(width[~sel]) < np.nanmedian(width[sel])  # 6000 subjects vs 700


def test_subgroup_metrics_constant_group_and_single_class_give_reasons():
    table = {"y": np.array([5.0, 5.0, 5.0, 1.0, 2.0]), "c": np.array([1, 1, 0, 0, 1], dtype=np.int8)}
    predictions = {"z": {"y": np.array([4.0, 5.0, 6.0, 1.0, 2.0]), "c": np.array([0.9, 0.8, 0.1, 0.3, 0.7])}}
    tasks = {"y": "regression", "c": "classification"}
    frame = subgroup_metrics(table, tasks, predictions, {"g": np.array([0, 1, 2])}, intervals=True)
    rows = frame.set_index("metric")
    assert math.isnan(rows.loc["r2", "value"]) and "constant" in rows.loc["r2", "reason"]
    assert rows.loc["mae", "value"] == pytest.approx(2 / 3)
    assert math.isnan(rows.loc["auroc", "value"]) is False
    frame = subgroup_metrics(table, tasks, predictions, {"g": np.array([0, 1])}, intervals=True)
    rows = frame.set_index("metric")
    assert math.isnan(rows.loc["auroc", "value"]) and "one class" in rows.loc["auroc", "reason"]
    assert math.isnan(rows.loc["auroc", "ci_low"])


def test_subgroup_metrics_errors(cohort):
    table, tasks, predictions, groups = cohort
    with pytest.raises(ValueError, match="not in the table"):
        subgroup_metrics(table, {"height": "regression"}, predictions, groups)
    with pytest.raises(ValueError, match="must be 'regression' or 'classification'"):
        subgroup_metrics(table, {"age": "survival"}, predictions, groups)
    with pytest.raises(ValueError, match="rows"):
        subgroup_metrics(table, tasks, {"ecg": {"age": np.zeros(3)}}, groups)
    with pytest.raises(ValueError, match="outside"):
        subgroup_metrics(table, tasks, predictions, {"bad": np.array([len(table)])})
    with pytest.raises(ValueError, match="prepare_metrics"):
        subgroup_metrics(None, None, None, groups)
