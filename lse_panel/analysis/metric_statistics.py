"""Prediction metrics from per-group sufficient statistics that add across chunks: one pass, then estimates and intervals.

Two steps, so a cluster can run the first on each partition and add the results:

1. :func:`group_sufficient_statistics` walks each group's subjects once and returns, per group, a
   :class:`GroupStatistics`: for each (latent, regression phenotype) ten moment sums, for each
   (latent, classification phenotype) the counts of each class in fixed score bins. Statistics
   of disjoint parts of a group add (``a + b``), and those of a part subtract from the whole
   (the rest of the cohort is ``total - selection``), exactly.
2. :func:`metrics_from_statistics` turns them into point estimates and intervals.

The bins and shifts every part must share are a :class:`MetricLayout`, fixed once per cohort
(:func:`metric_layout`). :class:`PreparedMetrics` is one part's data (a partition, or the whole
cohort in process) with its subjects' score bins computed once.

Methods (state them where the numbers are shown):

- R² and MAE are exact (the sums of the residuals and of the phenotype). Their intervals are
  normal-approximation intervals with analytic standard errors: MAE's from the sample variance of
  ``|residual|``; R²'s from the delta method (the influence function of ``1 - mean(r²)/var(y)``,
  whose variance needs the moments up to the fourth kept here).
- AUROC is the Mann–Whitney statistic on the binned scores: pairs in different bins are ordered
  exactly, pairs sharing a bin count one half, as ties do. The bins are the cohort's score
  quantiles (:data:`SCORE_BINS` of them), so the error is at most half the share of (positive,
  negative) pairs that share a bin (about ``1 / SCORE_BINS``; measured below 2e-4 on the demo), and
  zero when a score takes at most :data:`SCORE_BINS` distinct values (each then has its own bin).
  Its interval is DeLong's, with every subject of a bin given that bin's placement value.
- Balanced accuracy is exact: the decision threshold is a bin edge. Its interval treats
  sensitivity and specificity as independent binomial proportions.

Intervals are clipped to each metric's range. At 50k subjects they agree with a 1000-resample
percentile bootstrap to within 10 % of the interval's width (``tests/analysis/test_metric_statistics.py``),
and cost nothing beyond the sums, so no selection ever resamples the cohort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping

import numba
import numpy as np
import pandas as pd
from scipy import stats

from lse_panel.analysis.selection import group_rows

__all__ = [
    "METRICS",
    "METRIC_COLUMNS",
    "SCORE_BINS",
    "THRESHOLD",
    "GroupStatistics",
    "MetricLayout",
    "PreparedMetrics",
    "Task",
    "group_sufficient_statistics",
    "merge_statistics",
    "metric_layout",
    "metrics_from_statistics",
    "prepare_metrics",
]

Task = Literal["regression", "classification"]

METRICS: dict[str, tuple[str, ...]] = {
    "regression": ("r2", "mae"),
    "classification": ("auroc", "balanced_accuracy"),
}
"""The metrics reported for each task, in the order tables list them."""

METRIC_COLUMNS = ["phenotype", "task", "latent", "group", "metric", "value", "ci_low", "ci_high", "n", "n_pos", "reason"]
"""Columns of :func:`metrics_from_statistics`' long table."""

THRESHOLD = 0.5
"""A score at or above this counts as a positive call for balanced accuracy."""

SCORE_BINS = 2048
"""Score bins per classification prediction: the AUROC's resolution, and 2 × 8 × 2048 bytes per group sent back."""

REGRESSION_SUMS = ("n", "y", "y2", "y3", "y4", "r2", "r4", "abs_r", "r2y", "r2y2")
"""What a group's regression statistics hold, for one (latent, phenotype): the count, then sums of powers of
``y`` (the phenotype minus the layout's shift), of the residual ``r = y_true - y_pred``, and their products."""


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True, eq=False)
class MetricLayout:
    """What every part of a cohort shares so that its statistics add: the pairs, the shifts, the score bins.

    Attributes
    ----------
    tasks
        ``{phenotype: "regression" | "classification"}``, in report order.
    latents
        Latent kinds, in report order.
    regression_pairs, classification_pairs
        ``(latent, phenotype)`` pairs with a prediction, rows of :class:`GroupStatistics`' arrays.
    shift
        Per regression phenotype, a value near its mean subtracted before taking powers (keeps the
        fourth moments free of cancellation).
    edges
        Per classification pair, increasing score bin edges; bin ``b`` holds scores in
        ``[edges[b-1], edges[b])`` (bin 0 everything below ``edges[0]``). The threshold is an edge.
    called_from
        Per classification pair, the first bin whose scores are ``>= threshold``.
    n_bins
        Width of the classification count arrays (the most bins any pair has).
    threshold
        Positive-call threshold for balanced accuracy.
    """

    tasks: Mapping[str, str]
    latents: tuple[str, ...]
    regression_pairs: tuple[tuple[str, str], ...]
    classification_pairs: tuple[tuple[str, str], ...]
    shift: Mapping[str, float]
    edges: Mapping[tuple[str, str], np.ndarray]
    called_from: Mapping[tuple[str, str], int]
    n_bins: int
    threshold: float = THRESHOLD


def _as_1d(values: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{what} must be 1-D; got shape {a.shape}.")
    return a


def _column(table: pd.DataFrame | Mapping[str, np.ndarray], name: str) -> np.ndarray:
    try:
        col = table[name]
    except KeyError:
        raise ValueError(f"phenotype {name!r} is in tasks but not in the table; columns: {list(table.keys())}.") from None
    return _as_1d(np.asarray(col.to_numpy() if isinstance(col, pd.Series) else col), f"phenotype {name!r}")


def _score_edges(scores: np.ndarray, bins: int, threshold: float) -> np.ndarray:
    """Edges of at most ``bins`` score bins: the scores' quantiles, or one bin per value when there are few values."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    s = s[: np.searchsorted(s, np.inf)]  # NaN and +inf sort last and never become edges (they are not binned)
    if s.size == 0:
        return np.array([threshold])
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    if starts.size <= bins - 1:
        edges = s[starts[1:]]  # every distinct value opens its own bin: binned AUROC is exact
    else:
        edges = s[(np.arange(1, bins - 1) * s.size) // (bins - 1)]
    return np.unique(np.r_[edges, threshold])


def metric_layout(
    table: pd.DataFrame | Mapping[str, np.ndarray],
    tasks: Mapping[str, Task],
    predictions: Mapping[str, Mapping[str, np.ndarray]],
    *,
    bins: int = SCORE_BINS,
    threshold: float = THRESHOLD,
) -> MetricLayout:
    """Fix the pairs, shifts and score bins every part of a cohort will use.

    Computed from the whole cohort in process; a cluster can pass any representative subset of
    rows (e.g. a random million): the layout only sets the bins' resolution, never makes a
    statistic wrong.

    Parameters
    ----------
    table
        Phenotypes (the truth); a DataFrame or a mapping of 1-D arrays.
    tasks
        ``{phenotype: "regression" | "classification"}``; the phenotypes to report.
    predictions
        ``{latent kind: {phenotype: predictions}}``; a phenotype a latent has no prediction for is
        skipped for that latent.
    bins
        Score bins per classification prediction (at least 2).
    threshold
        Positive-call threshold for balanced accuracy.

    Returns
    -------
    MetricLayout
    """
    if not 2 <= bins <= 16_000:
        raise ValueError(f"bins must lie between 2 and 16000 (codes are int16); got {bins}.")
    shift: dict[str, float] = {}
    for name, task in tasks.items():
        if task not in METRICS:
            raise ValueError(f"task for {name!r} must be 'regression' or 'classification'; got {task!r}.")
        col = _column(table, name)
        if task == "regression":
            if col.dtype.kind not in "fiu":
                raise ValueError(f"regression phenotype {name!r} must be numeric; got dtype {col.dtype}.")
            finite = col[np.isfinite(col)] if col.dtype.kind == "f" else col
            shift[name] = float(finite.mean(dtype=np.float64)) if finite.size else 0.0
    latents = tuple(predictions)
    pairs = [(latent, name) for name in tasks for latent in latents if name in predictions[latent]]
    regression = tuple(p for p in pairs if tasks[p[1]] == "regression")
    classification = tuple(p for p in pairs if tasks[p[1]] == "classification")
    edges = {p: _score_edges(predictions[p[0]][p[1]], bins, threshold) for p in classification}
    called_from = {p: int(np.searchsorted(e, threshold)) + 1 for p, e in edges.items()}
    n_bins = max((len(e) + 1 for e in edges.values()), default=1)
    return MetricLayout(dict(tasks), latents, regression, classification, shift, edges, called_from, n_bins, threshold)


# ----------------------------------------------------------------------------- prepared data


@dataclass(frozen=True, eq=False)
class PreparedMetrics:
    """One part's truth and predictions (a partition, or a whole cohort), ready for :func:`group_sufficient_statistics`.

    Holds references to the caller's arrays (no copies of memory-maps) plus, per classification
    pair, one int16 per subject: ``2 * bin + label``, or ``-1`` where the label or the score is
    missing (2 bytes per subject per classification prediction).
    """

    layout: MetricLayout
    n: int
    truth: Mapping[str, np.ndarray]
    predictions: Mapping[tuple[str, str], np.ndarray]
    codes: Mapping[tuple[str, str], np.ndarray] = field(repr=False)

    @property
    def tasks(self) -> Mapping[str, str]:
        return self.layout.tasks


def _class_codes(truth: np.ndarray, scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    label = np.asarray(truth)
    codes = (2 * np.searchsorted(edges, s, side="right")).astype(np.int16)
    codes += (label == 1).astype(np.int16)
    codes[~(((label == 0) | (label == 1)) & np.isfinite(s))] = -1
    return codes


def prepare_metrics(
    table: pd.DataFrame | Mapping[str, np.ndarray],
    tasks: Mapping[str, Task],
    predictions: Mapping[str, Mapping[str, np.ndarray]],
    *,
    layout: MetricLayout | None = None,
    threshold: float = THRESHOLD,
) -> PreparedMetrics:
    """Check shapes and bin every classification score once, for :func:`group_sufficient_statistics`.

    Parameters
    ----------
    table
        Phenotypes (the truth) of this part, one row per subject.
    tasks
        ``{phenotype: "regression" | "classification"}``.
    predictions
        ``{latent kind: {phenotype: predictions}}`` of the same subjects.
    layout
        The cohort's :class:`MetricLayout`; every part of one cohort must share one. Default: the
        layout of these data (:func:`metric_layout`), right for a whole cohort in process.
    threshold
        Positive-call threshold, when the layout is computed here.

    Returns
    -------
    PreparedMetrics
    """
    layout = layout if layout is not None else metric_layout(table, tasks, predictions, threshold=threshold)
    truth = {name: _column(table, name) for name in layout.tasks}
    n = next(iter(truth.values())).shape[0] if truth else next(
        (len(p) for per in predictions.values() for p in per.values()), 0
    )
    for name, col in truth.items():
        if col.shape[0] != n:
            raise ValueError(f"phenotype {name!r} has {col.shape[0]} rows; the others have {n}.")
    preds: dict[tuple[str, str], np.ndarray] = {}
    for latent, name in (*layout.regression_pairs, *layout.classification_pairs):
        try:
            pred = predictions[latent][name]
        except KeyError:
            raise ValueError(f"the layout expects predictions[{latent!r}][{name!r}]; this part has none.") from None
        pred = _as_1d(pred, f"predictions[{latent!r}][{name!r}]")
        if pred.shape[0] != n:
            raise ValueError(f"predictions[{latent!r}][{name!r}] has {pred.shape[0]} rows; the phenotype table has {n}.")
        preds[(latent, name)] = pred
    codes = {p: _class_codes(truth[p[1]], preds[p], layout.edges[p]) for p in layout.classification_pairs}
    return PreparedMetrics(layout, n, truth, preds, codes)


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True, eq=False)
class GroupStatistics:
    """Sufficient statistics of one group for every (latent, phenotype) of a :class:`MetricLayout`.

    Add the statistics of disjoint parts (``a + b``, :func:`merge_statistics`); subtract a part
    from its whole (``total - selection`` is the rest). Both are exact (counts are integers;
    moment sums are float64).

    Attributes
    ----------
    regression
        ``(len(layout.regression_pairs), 10)`` float64: :data:`REGRESSION_SUMS` per pair.
    classification
        ``(len(layout.classification_pairs), 2, layout.n_bins)`` int64: negatives then positives
        per score bin.
    """

    regression: np.ndarray
    classification: np.ndarray

    def _check(self, other: object) -> GroupStatistics:
        if not isinstance(other, GroupStatistics):
            return NotImplemented  # type: ignore[return-value]
        if other.regression.shape != self.regression.shape or other.classification.shape != self.classification.shape:
            raise ValueError("these statistics come from different layouts; compute every part with one MetricLayout.")
        return other

    def __add__(self, other: GroupStatistics) -> GroupStatistics:
        other = self._check(other)
        return GroupStatistics(self.regression + other.regression, self.classification + other.classification)

    def __sub__(self, other: GroupStatistics) -> GroupStatistics:
        other = self._check(other)
        return GroupStatistics(self.regression - other.regression, self.classification - other.classification)

    @classmethod
    def empty(cls, layout: MetricLayout) -> GroupStatistics:
        """The statistics of no subjects."""
        return cls(
            np.zeros((len(layout.regression_pairs), len(REGRESSION_SUMS))),
            np.zeros((len(layout.classification_pairs), 2, layout.n_bins), dtype=np.int64),
        )


def merge_statistics(parts: Iterable[Mapping[str, GroupStatistics]]) -> dict[str, GroupStatistics]:
    """Add per-part results of :func:`group_sufficient_statistics` group by group (e.g. over a cluster's partitions).

    Parameters
    ----------
    parts
        ``{group: GroupStatistics}`` per part; a group missing from a part had no subjects there.

    Returns
    -------
    dict
        ``{group: GroupStatistics}`` of the whole.
    """
    total: dict[str, GroupStatistics] = {}
    for part in parts:
        for label, s in part.items():
            total[label] = total[label] + s if label in total else s
    return total


@numba.njit(nogil=True, cache=True)
def _regression_kernel(y_true, y_pred, shift, rows, out):  # pragma: no cover - compiled
    # The subjects at ``rows``, in order: ten sums of powers (see REGRESSION_SUMS). Sorted rows
    # make the gathers a forward sweep over the memory-mapped columns.
    n = 0.0
    s = np.zeros(9)
    for k in range(rows.shape[0]):
        i = rows[k]
        t = np.float64(y_true[i])
        r = t - np.float64(y_pred[i])
        if not math.isfinite(r):  # a NaN or infinite value on either side
            continue
        y = t - shift
        y2 = y * y
        r2 = r * r
        n += 1.0
        s[0] += y
        s[1] += y2
        s[2] += y2 * y
        s[3] += y2 * y2
        s[4] += r2
        s[5] += r2 * r2
        s[6] += abs(r)
        s[7] += r2 * y
        s[8] += r2 * y2
    out[0] += n
    for j in range(9):
        out[j + 1] += s[j]


@numba.njit(nogil=True, cache=True)
def _class_kernel(codes, rows, out):  # pragma: no cover - compiled
    # codes[i] = 2 * bin + label, or -1: one increment per subject.
    for k in range(rows.shape[0]):
        c = codes[rows[k]]
        if c >= 0:
            out[c & 1, c >> 1] += 1


def group_sufficient_statistics(prepared: PreparedMetrics, groups: Mapping[str, np.ndarray]) -> dict[str, GroupStatistics]:
    """One pass over each group's subjects: the :class:`GroupStatistics` of every group.

    Cost is linear in the group's size, not the cohort's: pass a selection as its rows and get
    the rest of the cohort by subtraction from the cohort's total (computed once). Statistics of
    the same group on different parts of a cohort add (:func:`merge_statistics`).

    Parameters
    ----------
    prepared
        This part's data (:func:`prepare_metrics`, with the cohort's layout).
    groups
        ``{label: row indices (into this part) or boolean mask}``; groups may overlap, indices
        are counted as often as they appear.

    Returns
    -------
    dict
        ``{label: GroupStatistics}``, in the order of ``groups``.
    """
    layout = prepared.layout
    out = {}
    for label, group in groups.items():
        rows = group_rows(group, prepared.n, f"group {label!r}")
        s = GroupStatistics.empty(layout)
        for j, (latent, name) in enumerate(layout.regression_pairs):
            _regression_kernel(prepared.truth[name], prepared.predictions[(latent, name)], layout.shift[name], rows,
                               s.regression[j])  # fmt: skip
        for j, pair in enumerate(layout.classification_pairs):
            _class_kernel(prepared.codes[pair], rows, s.classification[j])
        out[label] = s
    return out


# ----------------------------------------------------------------------------- estimates and intervals


def _regression_estimates(sums: np.ndarray, z: float) -> tuple[dict[str, tuple[float, float, float]], int, str]:
    """``{metric: (value, low, high)}``, n and the reason a value is NaN, from one pair's sums."""
    n, sy, syy, sy3, sy4, srr, sr4, sa, sr2y, sr2y2 = (float(v) for v in sums)
    nan3 = (math.nan, math.nan, math.nan)
    if n < 0.5:
        return {"r2": nan3, "mae": nan3}, 0, "no subjects with both values"
    m, a, mae = sy / n, srr / n, sa / n
    var_abs = max(a - mae * mae, 0.0)
    se_mae = math.sqrt(var_abs / n)
    mae_ci = (mae, max(mae - z * se_mae, 0.0), mae + z * se_mae) if n >= 2 else (mae, math.nan, math.nan)
    if n < 2:
        return {"r2": nan3, "mae": mae_ci}, int(n), f"n={int(n)} < 2"
    v = syy / n - m * m  # var(y), population form: R² = 1 - mean(r²) / var(y)
    # Relative to Σ(y−shift)², cancellation below ~1e-12 means the values are constant.
    if v * n <= 1e-12 * syy or v <= 0.0:
        return {"r2": nan3, "mae": mae_ci}, int(n), "y_true is constant, R² undefined"
    r2 = 1.0 - a / v
    # Delta method: influence of subject i on R² is −(r_i² − a)/v + (a/v²)((y_i − m)² − v).
    var_r2sq = sr4 / n - a * a
    cov = (sr2y2 / n - 2 * m * sr2y / n + m * m * a) - a * v
    m4 = sy4 / n - 4 * m * sy3 / n + 6 * m * m * syy / n - 3 * m**4
    var_ysq = m4 - v * v
    psi2 = var_r2sq / v**2 - 2 * a * cov / v**3 + a * a * var_ysq / v**4
    se_r2 = math.sqrt(max(psi2, 0.0) / n)
    return {"r2": (r2, r2 - z * se_r2, min(r2 + z * se_r2, 1.0)), "mae": mae_ci}, int(n), ""


def _classification_estimates(
    counts: np.ndarray, called_from: int, z: float
) -> tuple[dict[str, tuple[float, float, float]], int, int, str]:
    """``{metric: (value, low, high)}``, n, positives and the reason a value is NaN, from one pair's bin counts."""
    neg, pos = counts[0].astype(np.float64), counts[1].astype(np.float64)
    n_neg, n_pos = float(neg.sum()), float(pos.sum())
    n = int(n_neg + n_pos)
    if n < 2 or n_pos == 0 or n_neg == 0:
        reason = f"n={n} < 2" if n < 2 else "only one class present"
        nan3 = (math.nan, math.nan, math.nan)
        return {"auroc": nan3, "balanced_accuracy": nan3}, n, int(n_pos), reason
    neg_below = np.cumsum(neg) - neg
    pos_above = n_pos - np.cumsum(pos)
    v10 = (neg_below + 0.5 * neg) / n_neg  # each positive's share of negatives below it (DeLong placements)
    v01 = (pos_above + 0.5 * pos) / n_pos
    auroc = float(pos @ v10) / n_pos
    s10 = float(pos @ (v10 - auroc) ** 2) / max(n_pos - 1.0, 1.0)
    s01 = float(neg @ (v01 - auroc) ** 2) / max(n_neg - 1.0, 1.0)
    se_auc = math.sqrt(s10 / n_pos + s01 / n_neg)
    tpr = float(pos[called_from:].sum()) / n_pos
    tnr = float(neg[:called_from].sum()) / n_neg
    ba = 0.5 * (tpr + tnr)
    se_ba = 0.5 * math.sqrt(tpr * (1 - tpr) / n_pos + tnr * (1 - tnr) / n_neg)
    out = {
        "auroc": (auroc, max(auroc - z * se_auc, 0.0), min(auroc + z * se_auc, 1.0)),
        "balanced_accuracy": (ba, max(ba - z * se_ba, 0.0), min(ba + z * se_ba, 1.0)),
    }
    return out, n, int(n_pos), ""


def metrics_from_statistics(
    statistics: Mapping[str, GroupStatistics],
    layout: MetricLayout,
    *,
    intervals: bool = True,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Point estimates and intervals of every metric, latent, phenotype and group, from sufficient statistics.

    See the module docstring for the methods.

    Parameters
    ----------
    statistics
        ``{group: GroupStatistics}`` (:func:`group_sufficient_statistics`, merged over parts).
    layout
        The layout they were computed with.
    intervals
        Add the intervals (``ci_low``/``ci_high``; NaN when off).
    confidence
        Coverage of the intervals.

    Returns
    -------
    pandas.DataFrame
        Long format, :data:`METRIC_COLUMNS`: ``phenotype, task, latent, group, metric, value,
        ci_low, ci_high, n, n_pos, reason``. ``n`` counts subjects with both a value and a
        prediction; ``n_pos`` the positives (classification only); ``reason`` says why a value is
        NaN (``n < 2``, a constant phenotype, one class).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1; got {confidence}.")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    index = {p: ("regression", j) for j, p in enumerate(layout.regression_pairs)}
    index.update({p: ("classification", j) for j, p in enumerate(layout.classification_pairs)})
    rows = []
    for name, task in layout.tasks.items():
        for latent in layout.latents:
            if (latent, name) not in index:
                continue
            _, j = index[(latent, name)]
            for group, s in statistics.items():
                if task == "regression":
                    values, n, reason = _regression_estimates(s.regression[j], z)
                    n_pos = None
                else:
                    pair = (latent, name)
                    values, n, n_pos, reason = _classification_estimates(
                        s.classification[j], layout.called_from[pair], z
                    )
                for metric in METRICS[task]:
                    value, lo, hi = values[metric]
                    if not intervals or not math.isfinite(value):
                        lo = hi = math.nan
                    rows.append((name, task, latent, group, metric, value, lo, hi, n, n_pos, reason))
    frame = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    frame["n_pos"] = frame["n_pos"].astype("Int64")
    return frame
