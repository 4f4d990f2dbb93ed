"""How well predictions fit a phenotype: exact metrics of one set of pairs, and every metric of every group with intervals."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from lse_panel.analysis.metric_statistics import (
    METRICS,
    THRESHOLD,
    PreparedMetrics,
    Task,
    _as_1d,
    group_sufficient_statistics,
    metrics_from_statistics,
    prepare_metrics,
)

__all__ = ["METRICS", "THRESHOLD", "Task", "classification_metrics", "regression_metrics", "subgroup_metrics"]


# ----------------------------------------------------------------------------- cleaning


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = _as_1d(y_true, "y_true")
    y_pred = _as_1d(y_pred, "y_pred")
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            f"y_true and y_pred have different lengths ({y_true.shape[0]} and {y_pred.shape[0]}); "
            "pass one prediction per subject."
        )
    return y_true, y_pred


def _regression_pairs(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 pairs where both values are finite (missing phenotypes are NaN)."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    return (t, p) if ok.all() else (t[ok], p[ok])


def _classification_pairs(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs whose label is 0 or 1 and whose score is finite; any other code counts as missing."""
    t = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    ok = ((t == 0) | (t == 1)) & np.isfinite(s)
    return t[ok].astype(np.int8), s[ok]


# ----------------------------------------------------------------------------- point estimates


def _r2_mae(t: np.ndarray, p: np.ndarray) -> tuple[float, float, str]:
    n = t.size
    if n < 2:
        return math.nan, (float(np.abs(t - p).mean()) if n else math.nan), f"n={n} < 2"
    resid = t - p
    ss_res = float(np.dot(resid, resid))
    centred = t - t.mean()
    ss_tot = float(np.dot(centred, centred))
    mae = float(np.abs(resid).mean())
    if ss_tot == 0.0:
        return math.nan, mae, "y_true is constant, R² undefined"
    return 1.0 - ss_res / ss_tot, mae, ""


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | int | str]:
    """R² and mean absolute error of predictions, as scikit-learn computes them.

    Pairs where either value is not finite (a missing phenotype) are left out; ``n`` counts the rest.

    Parameters
    ----------
    y_true
        Observed values.
    y_pred
        Predictions, same length.

    Returns
    -------
    dict
        ``r2``, ``mae``, ``n`` and ``reason``: ``""``, or why a metric is NaN (``n < 2``, a
        constant ``y_true``). Undefined never raises: a subgroup can be anything a lasso catches.
    """
    t, p = _regression_pairs(*_check_pair(y_true, y_pred))
    r2, mae, reason = _r2_mae(t, p)
    return {"r2": r2, "mae": mae, "n": int(t.size), "reason": reason}


def _auroc_ba(t: np.ndarray, s: np.ndarray, threshold: float) -> tuple[float, float, str]:
    n = t.size
    n_pos = int(t.sum())
    n_neg = n - n_pos
    if n < 2 or n_pos == 0 or n_neg == 0:
        return math.nan, math.nan, f"n={n} < 2" if n < 2 else "only one class present"
    # Mann–Whitney U from midranks: identical to the ROC area with ties counted as 1/2, and exact in
    # float64 (rank sums are half-integers far below 2**53).
    order = np.argsort(s)  # tie order is irrelevant: ties are counted a whole block at a time
    ss = s[order]
    new_block = np.empty(n, dtype=bool)
    new_block[0] = True
    np.not_equal(ss[1:], ss[:-1], out=new_block[1:])
    starts = np.flatnonzero(new_block)
    block_pos = np.add.reduceat(t[order].astype(np.int64), starts)
    block_n = np.diff(np.append(starts, n))
    block_neg = block_n - block_pos
    neg_before = np.cumsum(block_neg) - block_neg
    u = float(np.dot(block_pos, neg_before)) + 0.5 * float(np.dot(block_pos, block_neg))
    called = s >= threshold
    tp = int(np.count_nonzero(called & (t == 1)))
    tn = int(np.count_nonzero(~called & (t == 0)))
    return u / (n_pos * n_neg), 0.5 * (tp / n_pos + tn / n_neg), ""


def classification_metrics(
    y_true: np.ndarray, y_score: np.ndarray, *, threshold: float = THRESHOLD
) -> dict[str, float | int | str]:
    """ROC AUC of a score and balanced accuracy of calling ``score >= threshold`` positive.

    Match ``sklearn.metrics.roc_auc_score(y_true, y_score)`` and
    ``balanced_accuracy_score(y_true, y_score >= threshold)``. Labels other than 0 and 1 (a
    missing-value code) and non-finite scores are left out.

    Parameters
    ----------
    y_true
        0/1 labels.
    y_score
        Probability of class 1 (any score works for AUROC; balanced accuracy needs the threshold to
        mean something).
    threshold
        Score at or above which a subject is called positive.

    Returns
    -------
    dict
        ``auroc``, ``balanced_accuracy``, ``n``, ``n_pos`` and ``reason`` (why the metrics are NaN:
        ``n < 2`` or only one class present; ``""`` otherwise).
    """
    t, s = _classification_pairs(*_check_pair(y_true, y_score))
    auroc, ba, reason = _auroc_ba(t, s, threshold)
    return {"auroc": auroc, "balanced_accuracy": ba, "n": int(t.size), "n_pos": int(t.sum()), "reason": reason}


def subgroup_metrics(
    table: pd.DataFrame | Mapping[str, np.ndarray] | None,
    tasks: Mapping[str, Task] | None,
    predictions: Mapping[str, Mapping[str, np.ndarray]] | None,
    groups: Mapping[str, np.ndarray],
    *,
    prepared: PreparedMetrics | None = None,
    intervals: bool = True,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Every metric of every latent's predictions of every phenotype, in every group, with intervals.

    :func:`~lse_panel.analysis.metric_statistics.group_sufficient_statistics` then
    :func:`~lse_panel.analysis.metric_statistics.metrics_from_statistics`: one pass over each
    group's subjects, then analytic intervals (the methods are in
    :mod:`lse_panel.analysis.metric_statistics`). R², MAE and balanced accuracy equal
    scikit-learn's; AUROC is computed on the cohort's score quantile bins (exact when a score has
    few distinct values, else within about ``1 / SCORE_BINS``).

    Parameters
    ----------
    table
        Phenotypes (the truth), one row per subject.
    tasks
        ``{phenotype: "regression" | "classification"}``; the rows to report.
    predictions
        ``{latent kind: {phenotype: cross-fitted predictions}}`` (probability of class 1 for
        classification).
    groups
        ``{group name: indices or boolean mask}``, e.g. selection, rest, all; groups may overlap.
    prepared
        From :func:`~lse_panel.analysis.metric_statistics.prepare_metrics` on the same data (it
        bins every score once per cohort); ``table``, ``tasks`` and ``predictions`` are then
        ignored. Built here if omitted.
    intervals
        Add the intervals; off, ``ci_low``/``ci_high`` are NaN.
    confidence
        Coverage of the intervals.

    Returns
    -------
    pandas.DataFrame
        Long format: ``phenotype, task, latent, group, metric, value, ci_low, ci_high, n, n_pos,
        reason`` (:data:`~lse_panel.analysis.metric_statistics.METRIC_COLUMNS`).
    """
    if prepared is None:
        if table is None or tasks is None or predictions is None:
            raise ValueError("pass table, tasks and predictions, or prepared=prepare_metrics(...).")
        prepared = prepare_metrics(table, tasks, predictions)
    statistics = group_sufficient_statistics(prepared, groups)
    return metrics_from_statistics(statistics, prepared.layout, intervals=intervals, confidence=confidence)
