"""Prediction accuracy per group for the panes: the selection, its comparison and the cohort, privacy applied."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from lse_panel.analysis.groups import COMPARISON, SELECTION, GroupSet
from lse_panel.analysis.metric_statistics import metrics_from_statistics
from lse_panel.analysis.privacy import PrivacyPolicy

__all__ = ["COHORT", "accuracy_by_group", "group_metrics", "mask_hidden_groups", "selection_metrics"]

COHORT = "cohort"
"""Label of the whole cohort in metric tables."""


def group_metrics(groups: GroupSet, labels: Mapping[str, str], *, intervals: bool = True) -> pd.DataFrame:
    """Metrics with intervals of the groups ``labels`` names, from their cached sufficient statistics.

    Parameters
    ----------
    groups
        The session's groups, built with metric sums (:class:`~lse_panel.analysis.groups.MetricSums`).
    labels
        ``{label in groups, or "cohort": name in the table}``, in table order.
    intervals
        Add the intervals (they cost no more than the sums).

    Returns
    -------
    pandas.DataFrame
        :func:`~lse_panel.analysis.metric_statistics.metrics_from_statistics`' long table.
    """
    sums = groups.metric_sums
    if sums is None:
        raise ValueError("these groups have no metric sums: the cohort has no predictions.")
    statistics = {
        name: sums.total() if label == COHORT else groups.metric_statistics(label) for label, name in labels.items()
    }
    return metrics_from_statistics(statistics, sums.layout, intervals=intervals)


def selection_metrics(groups: GroupSet, *, intervals: bool = True) -> pd.DataFrame:
    """Metrics in the selection, its comparison group and the whole cohort, every latent kind.

    The rest of the cohort is the cohort's statistics minus the selection's, so a selection costs
    one pass over its own subjects (:meth:`GroupSet.metric_statistics`).

    Parameters
    ----------
    groups
        The session's groups.
    intervals
        Add the intervals.

    Returns
    -------
    pandas.DataFrame
        Long format with groups ``selection``, ``comparison`` and ``cohort``; a group with no
        subjects has NaN values and its ``reason`` says so.
    """
    return group_metrics(groups, {SELECTION: SELECTION, COMPARISON: COMPARISON, COHORT: COHORT}, intervals=intervals)


def mask_hidden_groups(
    table: pd.DataFrame, hidden: Mapping[str, str], policy: PrivacyPolicy, *, n_cols: Sequence[str] = ("n",)
) -> pd.DataFrame:
    """``table`` with the privacy floor applied: rows of ``hidden`` groups, and any row from too few subjects, masked.

    Parameters
    ----------
    table
        A long-format table with a ``group`` column, e.g. :func:`selection_metrics`' metrics.
    hidden
        ``{group: reason}`` of whole groups not to show (``GroupSet.hidden``).
    policy
        The privacy policy; its :meth:`~PrivacyPolicy.filter_table` masks each row whose
        ``n_cols`` (e.g. subjects with a value and a prediction) is below the floor.
    n_cols
        The columns holding each row's group sizes.

    Returns
    -------
    pandas.DataFrame
        A copy: masked values are NaN, ``reason`` says why, counts stay.
    """
    # A hidden group's rows get a size of 0 in a helper column, so filter_table masks them whole.
    group_n = np.where(table["group"].isin(list(hidden)), 0, np.inf)
    out = policy.filter_table(table.assign(_group_n=group_n), [*n_cols, "_group_n"]).drop(columns="_group_n")
    for group, reason in hidden.items():
        out.loc[out["group"] == group, "reason"] = reason
    return out


def accuracy_by_group(
    groups: GroupSet, labels: Mapping[str, str], *, policy: PrivacyPolicy | None = None
) -> pd.DataFrame:
    """Accuracy metrics of every latent kind's predictions in each group, with the privacy floor applied.

    Parameters
    ----------
    groups
        The groups, the reference included (e.g. the session's, with saved subgroups added).
    labels
        ``{label in groups: name in the table}``.
    policy
        Rows computed from fewer subjects than ``policy.min_group_size`` are masked and flagged
        in ``hidden``.

    Returns
    -------
    pandas.DataFrame
        :func:`group_metrics`' long table plus ``hidden``; empty when there are no predictions or
        no groups.
    """
    policy = policy if policy is not None else PrivacyPolicy()
    if groups.metric_sums is None or not labels:
        return pd.DataFrame()
    long = group_metrics(groups, labels)
    hidden = long["n"].to_numpy() < policy.min_group_size
    long = policy.filter_table(long, "n")
    long["hidden"] = hidden
    return long
