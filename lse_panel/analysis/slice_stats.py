"""The slice search's statistics: per-subject losses, and Welch and Benjamini–Hochberg tests from sums."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import stats

from lse_panel.analysis.metrics import Task

__all__ = [
    "LOSSES",
    "LOSS_NAMES",
    "TARGET_STRATA",
    "Loss",
    "benjamini_hochberg",
    "loss_given_target",
    "per_subject_loss",
    "welch_greater",
]

Loss = Literal["absolute", "squared", "brier", "log"]

LOSSES: dict[str, tuple[str, ...]] = {"regression": ("absolute", "squared"), "classification": ("brier", "log")}
"""The per-subject losses each task may be searched on; the first is the default."""

LOSS_NAMES = {"absolute": "absolute error", "squared": "squared error", "brier": "Brier score", "log": "log-loss"}


# ----------------------------------------------------------------------------- losses


def per_subject_loss(truth: np.ndarray, prediction: np.ndarray, task: Task, loss: Loss | None = None) -> np.ndarray:
    """Each subject's loss: what a slice's failure is measured, tested and ranked by.

    Parameters
    ----------
    truth, prediction
        Observed values (0/1 labels for classification) and cross-fitted predictions
        (probability of class 1 for classification).
    task
        ``"regression"`` or ``"classification"``.
    loss
        ``"absolute"`` (default for regression: its mean is the MAE) or ``"squared"`` (its mean
        is the MSE); ``"brier"`` (default for classification: bounded, so its mean is well
        behaved) or ``"log"`` (log-loss, scores clipped to [1e-15, 1 − 1e-15]).

    Returns
    -------
    numpy.ndarray
        float64, NaN where the truth or the prediction is missing (or a label is not 0/1).
    """
    if task not in LOSSES:
        raise ValueError(f"task must be 'regression' or 'classification'; got {task!r}.")
    loss = loss or LOSSES[task][0]
    if loss not in LOSSES[task]:
        raise ValueError(f"loss {loss!r} does not fit a {task} target; use one of {', '.join(LOSSES[task])}.")
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(prediction, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"truth and prediction must be 1-D and the same length; got {t.shape} and {p.shape}.")
    if task == "classification":
        t = np.where((t == 0) | (t == 1), t, np.nan)
    if loss == "absolute":
        return np.abs(t - p)
    if loss == "squared":
        return (t - p) ** 2
    if loss == "brier":
        return (p - t) ** 2
    q = np.clip(p, 1e-15, 1 - 1e-15)
    return -(t * np.log(q) + (1 - t) * np.log1p(-q))


TARGET_STRATA = 50
"""Quantile strata of a continuous target within which :func:`loss_given_target` compares losses.

Fine strata because the loss keeps rising within a coarse tail stratum: with deciles, a proxy of
the target still marked out a (weak but significant) "failure" in a test cohort of 20k; with 20
or more strata it did not."""


def loss_given_target(loss: np.ndarray, truth: np.ndarray, task: Task) -> np.ndarray:
    """Each subject's loss beyond what subjects with a similar target value incur, plus the mean loss.

    A predictor that shrinks towards the mean errs most in the target's own tails, so any
    phenotype correlated with the target (LV volumes for LVEF) marks out "failures" that are only
    those tails. Subtracting the mean loss of the subject's stratum of the target
    (:data:`TARGET_STRATA` quantile strata for a continuous target, the class for a binary one)
    leaves what a slice adds at the same target value; the overall mean is added back so the
    numbers stay in the loss's units.

    Parameters
    ----------
    loss
        Per-subject loss (:func:`per_subject_loss`), NaN where missing.
    truth
        The target.
    task
        ``"regression"`` (quantile strata) or ``"classification"`` (the 0/1 label).

    Returns
    -------
    numpy.ndarray
        The adjusted loss, NaN where ``loss`` is.
    """
    valid = np.isfinite(loss)
    if not valid.any():
        return loss.copy()
    t = np.asarray(truth, dtype=np.float64)
    if task == "classification":
        stratum = np.where(t == 1, 1, 0)
    else:
        cuts = np.unique(np.quantile(t[valid], np.linspace(0, 1, TARGET_STRATA + 1)[1:-1]))
        stratum = np.searchsorted(cuts, t, side="right")
    stratum = np.where(valid, stratum, 0)
    counts = np.bincount(stratum, weights=valid.astype(np.float64))
    means = np.bincount(stratum, weights=np.where(valid, loss, 0.0)) / np.maximum(counts, 1)
    return np.where(valid, loss - means[stratum] + loss[valid].mean(), np.nan)


# ----------------------------------------------------------------------------- tests


def welch_greater(n1, s1, q1, n0, s0, q0):
    """One-sided Welch t-test that group 1's mean loss exceeds group 0's, from counts and sums.

    Returns ``(difference of means, its standard error, Welch–Satterthwaite df, p-value)``; the
    p-value is 1 where either group has fewer than two subjects or no spread.
    """
    n1, s1, q1, n0, s0, q0 = (np.asarray(v, dtype=np.float64) for v in (n1, s1, q1, n0, s0, q0))
    with np.errstate(divide="ignore", invalid="ignore"):
        m1, m0 = s1 / n1, s0 / n0
        a1 = np.maximum(q1 - s1 * m1, 0.0) / (n1 - 1.0) / n1
        a0 = np.maximum(q0 - s0 * m0, 0.0) / (n0 - 1.0) / n0
        se = np.sqrt(a1 + a0)
        df = (a1 + a0) ** 2 / (a1**2 / (n1 - 1.0) + a0**2 / (n0 - 1.0))
        t = (m1 - m0) / se
        ok = (n1 >= 2) & (n0 >= 2) & (se > 0)
        p = np.where(ok, stats.t.sf(np.where(ok, t, 0.0), np.where(ok, df, 1.0)), 1.0)
    return m1 - m0, se, df, p


def benjamini_hochberg(p_values: np.ndarray, n_tests: int | None = None) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), over ``n_tests`` hypotheses.

    ``scipy.stats.false_discovery_control(p, method="bh")`` when ``n_tests`` is ``len(p)``; a
    larger ``n_tests`` counts hypotheses that were not computed (pruned slices) as p = 1, which
    can only make every q-value larger.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size if n_tests is None else int(n_tests)
    if m < p.size:
        raise ValueError(f"n_tests ({m}) is smaller than the number of p-values ({p.size}).")
    if p.size == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, p.size + 1)
    q = np.empty_like(p)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q
