"""Sufficient statistics add across parts; the metrics they give match scikit-learn and a percentile bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score

from lse_panel.analysis.metric_statistics import (
    SCORE_BINS,
    GroupStatistics,
    group_sufficient_statistics,
    merge_statistics,
    metric_layout,
    metrics_from_statistics,
    prepare_metrics,
)

TASKS = {"age": "regression", "af": "classification"}


def _cohort(n: int, seed: int = 0, *, rounded: bool = False):
    rng = np.random.default_rng(seed)
    age = rng.normal(58, 8, n)
    af = (rng.random(n) < 0.2).astype(np.int8)
    table = pd.DataFrame({"age": age.astype(np.float32), "af": af})
    predictions = {}
    for latent, noise in {"ecg": 1.0, "fused": 0.5}.items():
        score = 1 / (1 + np.exp(-((2 * af - 1) * 1.2 + noise * 1.5 * rng.normal(size=n))))
        predictions[latent] = {
            "age": (0.8 * age + 11.6 + noise * 6 * rng.normal(size=n)).astype(np.float32),
            "af": np.round(score, 2) if rounded else score,
        }
    return table, predictions


def _metrics(frame: pd.DataFrame, group: str) -> dict[tuple[str, str], pd.Series]:
    part = frame[frame["group"] == group]
    return {(r.latent, r.metric): r for r in part.itertuples()}


# ----------------------------------------------------------------------------- merging


def test_statistics_of_parts_add_up_to_the_whole_and_subtract_to_the_rest():
    table, predictions = _cohort(4_000)
    layout = metric_layout(table, TASKS, predictions)
    whole = prepare_metrics(table, TASKS, predictions, layout=layout)
    selection = np.sort(np.random.default_rng(1).choice(4_000, 900, replace=False))
    direct = group_sufficient_statistics(whole, {"selection": selection, "all": np.ones(4_000, dtype=bool)})

    # Two "partitions" of the cohort, each with its own local rows, prepared with the shared layout.
    cut = 2_500
    parts = []
    for lo, hi in ((0, cut), (cut, 4_000)):
        part = prepare_metrics(
            table.iloc[lo:hi], TASKS, {k: {p: v[lo:hi] for p, v in per.items()} for k, per in predictions.items()},
            layout=layout,
        )
        local = selection[(selection >= lo) & (selection < hi)] - lo
        parts.append(group_sufficient_statistics(part, {"selection": local, "all": np.arange(hi - lo)}))
    merged = merge_statistics(parts)
    for label in ("selection", "all"):
        np.testing.assert_array_equal(merged[label].classification, direct[label].classification)
        np.testing.assert_allclose(merged[label].regression, direct[label].regression, rtol=1e-12, atol=1e-8)

    rest = np.setdiff1d(np.arange(4_000), selection)
    by_rows = group_sufficient_statistics(whole, {"rest": rest})["rest"]
    by_subtraction = direct["all"] - direct["selection"]
    np.testing.assert_array_equal(by_subtraction.classification, by_rows.classification)
    np.testing.assert_allclose(by_subtraction.regression, by_rows.regression, rtol=1e-9, atol=1e-6)
    a = metrics_from_statistics({"rest": by_rows}, layout)
    b = metrics_from_statistics({"rest": by_subtraction}, layout)
    pd.testing.assert_frame_equal(a, b, rtol=1e-9)


def test_statistics_from_another_layout_refuse_to_add():
    table, predictions = _cohort(500)
    one = metric_layout(table, TASKS, predictions)
    other = metric_layout(table, {"age": "regression"}, predictions)
    with pytest.raises(ValueError, match="different layouts"):
        GroupStatistics.empty(one) + GroupStatistics.empty(other)


def test_a_part_without_a_prediction_the_layout_needs_is_refused():
    table, predictions = _cohort(500)
    layout = metric_layout(table, TASKS, predictions)
    with pytest.raises(ValueError, match=r"predictions\['ecg'\]\['af'\]"):
        prepare_metrics(table, TASKS, {"ecg": {"age": predictions["ecg"]["age"]}, "fused": predictions["fused"]},
                        layout=layout)  # fmt: skip


# ----------------------------------------------------------------------------- point estimates


def test_r2_mae_and_balanced_accuracy_equal_sklearn_and_auroc_is_within_the_bin_resolution():
    n = 200_000
    table, predictions = _cohort(n, seed=3)
    prepared = prepare_metrics(table, TASKS, predictions)
    group = np.sort(np.random.default_rng(4).choice(n, 60_000, replace=False))
    frame = metrics_from_statistics(group_sufficient_statistics(prepared, {"g": group}), prepared.layout)
    got = _metrics(frame, "g")
    y = table["age"].to_numpy(np.float64)[group]
    label = table["af"].to_numpy()[group]
    for latent, per in predictions.items():
        p = per["age"].astype(np.float64)[group]
        assert got[(latent, "r2")].value == pytest.approx(r2_score(y, p), abs=1e-9)
        assert got[(latent, "mae")].value == pytest.approx(mean_absolute_error(y, p), abs=1e-9)
        s = per["af"][group]
        assert got[(latent, "balanced_accuracy")].value == pytest.approx(
            balanced_accuracy_score(label, s >= 0.5), abs=1e-12
        )
        # Continuous scores: binned on the cohort's 2048 quantiles, the AUROC moves by far less
        # than its own interval's half-width (~0.004 here).
        exact = roc_auc_score(label, s)
        assert abs(got[(latent, "auroc")].value - exact) < 2e-4
        assert got[(latent, "auroc")].n_pos == int(label.sum())


def test_auroc_is_exact_when_scores_take_few_values():
    table, predictions = _cohort(30_000, seed=5, rounded=True)  # 101 distinct scores, many ties, some at 0.5
    prepared = prepare_metrics(table, TASKS, predictions)
    assert prepared.layout.n_bins <= SCORE_BINS
    group = np.arange(0, 30_000, 3)
    got = _metrics(metrics_from_statistics(group_sufficient_statistics(prepared, {"g": group}), prepared.layout), "g")
    label = table["af"].to_numpy()[group]
    for latent, per in predictions.items():
        s = per["af"][group]
        assert got[(latent, "auroc")].value == pytest.approx(roc_auc_score(label, s), abs=1e-12)
        assert got[(latent, "balanced_accuracy")].value == pytest.approx(balanced_accuracy_score(label, s >= 0.5), abs=1e-12)


def test_a_layout_from_a_sample_of_rows_still_gives_exact_regression_metrics():
    table, predictions = _cohort(20_000, seed=6)
    sample = np.random.default_rng(0).choice(20_000, 2_000, replace=False)
    layout = metric_layout(
        table.iloc[sample], TASKS, {k: {p: v[sample] for p, v in per.items()} for k, per in predictions.items()}
    )
    prepared = prepare_metrics(table, TASKS, predictions, layout=layout)
    got = _metrics(metrics_from_statistics(group_sufficient_statistics(prepared, {"all": np.arange(20_000)}), layout),
                   "all")  # fmt: skip
    y = table["age"].to_numpy(np.float64)
    p = predictions["ecg"]["age"].astype(np.float64)
    assert got[("ecg", "r2")].value == pytest.approx(r2_score(y, p), abs=1e-9)
    assert abs(got[("ecg", "auroc")].value - roc_auc_score(table["af"], predictions["ecg"]["af"])) < 2e-3


# ----------------------------------------------------------------------------- intervals against a bootstrap


def _bootstrap_reference(y, p, label, score, *, n_resamples=1_000, seed=0):
    """Today's method, written plainly: a percentile bootstrap resampling subjects with replacement."""
    rng = np.random.default_rng(seed)
    n = y.size
    yc, r = y - y.mean(), y - p
    order = np.argsort(score)
    lab, called = label[order].astype(np.float64), (score[order] >= 0.5).astype(np.float64)
    out: dict[str, list[np.ndarray]] = {m: [] for m in ("r2", "mae", "auroc", "balanced_accuracy")}
    for _ in range(0, n_resamples, 50):
        w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(50)]).astype(np.float64)
        total = w.sum(axis=1)
        ss_tot = w @ (yc * yc) - (w @ yc) ** 2 / total
        out["r2"].append(1 - (w @ (r * r)) / ss_tot)
        out["mae"].append((w @ np.abs(r)) / total)
        wo = w[:, order]
        wp, wn = wo * lab, wo * (1 - lab)
        neg_below = np.cumsum(wn, axis=1) - wn  # continuous scores: no ties
        n_pos, n_neg = wp.sum(axis=1), wn.sum(axis=1)
        out["auroc"].append((wp * neg_below).sum(axis=1) / (n_pos * n_neg))
        out["balanced_accuracy"].append(0.5 * ((wp * called).sum(axis=1) / n_pos + (wn * (1 - called)).sum(axis=1) / n_neg))
    return {m: np.quantile(np.concatenate(v), [0.025, 0.975]) for m, v in out.items()}


def test_intervals_agree_with_a_percentile_bootstrap_at_50k():
    n = 50_000
    table, predictions = _cohort(n, seed=8)
    prepared = prepare_metrics(table, TASKS, predictions)
    frame = metrics_from_statistics(group_sufficient_statistics(prepared, {"all": np.arange(n)}), prepared.layout)
    got = _metrics(frame, "all")
    y = table["age"].to_numpy(np.float64)
    label = table["af"].to_numpy()
    for latent, per in predictions.items():
        reference = _bootstrap_reference(y, per["age"].astype(np.float64), label, per["af"])
        for metric, (lo, hi) in reference.items():
            row = got[(latent, metric)]
            width = hi - lo
            # Stated tolerance: each end within 10 % of the bootstrap interval's width (the
            # bootstrap's own Monte-Carlo error at 1000 resamples is about 3 %).
            assert abs(row.ci_low - lo) <= 0.10 * width, (latent, metric, row.ci_low, lo, width)
            assert abs(row.ci_high - hi) <= 0.10 * width, (latent, metric, row.ci_high, hi, width)


def test_intervals_cover_the_truth_about_95_percent_of_the_time():
    # 200 independent groups of 2,000 drawn from one large population: the population's own
    # metric should fall inside about 95 % of the groups' intervals.
    table, predictions = _cohort(400_000, seed=9)
    prepared = prepare_metrics(table, TASKS, predictions)
    population = _metrics(
        metrics_from_statistics(group_sufficient_statistics(prepared, {"all": np.arange(400_000)}), prepared.layout),
        "all",
    )
    groups = {f"g{i}": np.arange(i * 2_000, (i + 1) * 2_000) for i in range(200)}
    frame = metrics_from_statistics(group_sufficient_statistics(prepared, groups), prepared.layout)
    frame = frame[frame["latent"] == "fused"]
    for metric, part in frame.groupby("metric"):
        truth = population[("fused", metric)].value
        covered = ((part["ci_low"] <= truth) & (truth <= part["ci_high"])).mean()
        assert 0.90 <= covered <= 0.99, (metric, covered)


def test_undefined_metrics_have_reasons_and_no_intervals():
    table = {"y": np.array([5.0, 5.0, 5.0, 1.0]), "c": np.array([1, 1, 1, 0], dtype=np.int8)}
    predictions = {"z": {"y": np.array([4.0, 5.0, 6.0, 1.0]), "c": np.array([0.9, 0.8, 0.6, 0.3])}}
    tasks = {"y": "regression", "c": "classification"}
    prepared = prepare_metrics(table, tasks, predictions)
    frame = metrics_from_statistics(
        group_sufficient_statistics(prepared, {"same": np.array([0, 1, 2]), "none": np.array([], dtype=np.int64)}),
        prepared.layout,
    ).set_index(["group", "metric"])
    assert "constant" in frame.loc[("same", "r2"), "reason"] and math.isnan(frame.loc[("same", "r2"), "ci_low"])
    assert frame.loc[("same", "mae"), "value"] == pytest.approx(2 / 3)
    assert "one class" in frame.loc[("same", "auroc"), "reason"]
    assert frame.loc[("none", "mae"), "n"] == 0 and math.isnan(frame.loc[("none", "mae"), "value"])
    with pytest.raises(ValueError, match="confidence"):
        metrics_from_statistics({}, prepared.layout, confidence=95)
