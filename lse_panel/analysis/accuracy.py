"""Prediction accuracy per group for the panes: the selection, its comparison and the cohort, privacy applied."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from lse_panel.analysis.groups import COMPARISON, SELECTION, GroupSet
from lse_panel.analysis.metrics import PreparedMetrics, subgroup_metrics
from lse_panel.analysis.privacy import PrivacyPolicy

__all__ = ["accuracy_by_group", "mask_hidden_groups", "metrics_of_groups", "selection_metrics"]


def metrics_of_groups(
    prepared: PreparedMetrics,
    groups: Mapping[str, np.ndarray],
    *,
    bootstrap: bool = False,
    n_resamples: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`~lse_panel.analysis.metrics.subgroup_metrics` of ``groups`` (rows or masks) on prepared predictions."""
    return subgroup_metrics(
        None, None, None, dict(groups), prepared=prepared, bootstrap=bootstrap, n_resamples=n_resamples, seed=seed
    )


def selection_metrics(
    prepared: PreparedMetrics,
    groups: GroupSet,
    overall: pd.DataFrame,
    *,
    bootstrap: bool = False,
    n_resamples: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Metrics in the selection, its comparison group and the whole cohort, every latent kind.

    The rest of the cohort is passed as a mask (never gathered as indices) and the whole cohort's
    rows are ``overall`` (computed once per process) renamed; a saved subgroup is its rows.

    Parameters
    ----------
    prepared
        The cohort's prepared predictions.
    groups
        The session's groups.
    overall
        Metrics of the whole cohort (group ``"cohort"``), with or without intervals as ``bootstrap``.
    bootstrap
        Add bootstrap intervals (slower: compute the point estimates first).
    n_resamples, seed
        Bootstrap settings.

    Returns
    -------
    pandas.DataFrame
        Long format with groups ``selection``, ``comparison`` and ``cohort``; a group with no
        subjects has NaN values and its ``reason`` says so.
    """
    members = {SELECTION: groups.members(SELECTION)}
    if groups.comparison != "all":
        members[COMPARISON] = groups.members(COMPARISON)
    parts = [metrics_of_groups(prepared, members, bootstrap=bootstrap, n_resamples=n_resamples, seed=seed)]
    if groups.comparison == "all":
        parts.append(overall.assign(group=COMPARISON))
    parts.append(overall)
    return pd.concat(parts, ignore_index=True)


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
    prepared: PreparedMetrics, groups: Mapping[str, np.ndarray], *, policy: PrivacyPolicy | None = None
) -> pd.DataFrame:
    """Accuracy metrics of every latent kind's predictions in each group, with the privacy floor applied.

    Parameters
    ----------
    prepared
        The cohort's prepared predictions.
    groups
        ``{label: rows or mask}``, the reference included.
    policy
        Rows computed from fewer subjects than ``policy.min_group_size`` are masked and flagged
        in ``hidden``.

    Returns
    -------
    pandas.DataFrame
        :func:`~lse_panel.analysis.metrics.subgroup_metrics`' long table plus ``hidden``; empty
        when there are no predictions or no groups.
    """
    policy = policy if policy is not None else PrivacyPolicy()
    if not prepared.predictions or not groups:
        return pd.DataFrame()
    long = metrics_of_groups(prepared, groups)
    hidden = long["n"].to_numpy() < policy.min_group_size
    long = policy.filter_table(long, "n")
    long["hidden"] = hidden
    return long
