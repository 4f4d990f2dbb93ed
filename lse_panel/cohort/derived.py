"""Values derived from a cohort alone, computed once per process and shared by every session.

Each is keyed by the cohort object (a weak reference: the value goes with the cohort), so every
session of a ``panel serve`` process reads the same latent totals, phenotype bins and sorted
predictions, and a test's throw-away cohort leaves nothing behind.
"""

from __future__ import annotations

import threading
import weakref
from functools import partial
from typing import Any, Callable, Hashable, TypeVar

import numpy as np
import pandas as pd

from lse_panel.analysis.compare import PhenotypeStatistics, PhenotypeSums
from lse_panel.analysis.decode import latent_sum
from lse_panel.analysis.groups import BlockSums, PreparedSums
from lse_panel.analysis.histograms import DEFAULT_BINS, Binning, bin_phenotype
from lse_panel.analysis.latent_paths import NeighbourPlacer, latent_covariance, principal_from_covariance
from lse_panel.analysis.metric_statistics import (
    GroupStatistics,
    PreparedMetrics,
    group_sufficient_statistics,
    metrics_from_statistics,
    prepare_metrics,
)
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.slices import find_failures

__all__ = [
    "cohort_metrics",
    "cohort_statistics",
    "derived",
    "failures",
    "latent_statistics",
    "latent_sums",
    "metric_sums",
    "neighbour_placer",
    "phenotype_binning",
    "phenotype_sums",
    "phenotype_total",
    "prepared_metrics",
    "principal_axes",
]

T = TypeVar("T")

_VALUES: weakref.WeakKeyDictionary[Cohort, dict[Hashable, Any]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def derived(cohort: Cohort, key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()`` for ``cohort``, computed on the first call for ``key`` and kept while the cohort lives.

    Two sessions asking at once may both compute it (the values are pure); the first stored wins.

    Parameters
    ----------
    cohort
        The cohort the value is derived from.
    key
        What the value is, e.g. ``("latent_total", "fused")``.
    compute
        Called on a miss.
    """
    with _LOCK:
        values = _VALUES.get(cohort)
        if values is None:
            values = _VALUES[cohort] = {}
        if key in values:
            return values[key]
    value = compute()
    with _LOCK:
        return values.setdefault(key, value)


def latent_sums(cohort: Cohort) -> BlockSums:
    """The cohort's latent blocks and their cached column totals, for :class:`~lse_panel.analysis.groups.GroupSet`.

    Not itself cached: it refers to the cohort, and a cached value must not (it would keep its
    key alive).
    """
    return BlockSums(cohort.latent, partial(latent_total, cohort))


def latent_total(cohort: Cohort, kind: str) -> np.ndarray:
    """Column sums ``(d,)`` float64 of latent kind ``kind`` over every subject (~25 ms at 500k × 64, once)."""
    return derived(cohort, ("latent_total", kind), lambda: latent_sum(cohort.latent(kind)))


def latent_statistics(cohort: Cohort, kind: str) -> dict[str, np.ndarray]:
    """Sample mean and covariance of latent kind ``kind`` (see :func:`~lse_panel.analysis.latent_paths.latent_covariance`)."""

    def compute() -> dict[str, np.ndarray]:
        mean, cov = latent_covariance(cohort.latent(kind))
        return {"mean": mean, "cov": cov}

    return derived(cohort, ("latent_statistics", kind), compute)


def principal_axes(cohort: Cohort, kind: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` principal directions and variances of latent kind ``kind`` (once per process).

    An eigendecomposition of a 64 × 64 covariance took ~70 ms per call on the loaded 2-core
    machine (threaded LAPACK): too slow to redo on every selection.
    """
    return derived(
        cohort, ("principal_axes", kind, int(k)),
        lambda: principal_from_covariance(latent_statistics(cohort, kind)["cov"], k),
    )


def phenotype_binning(cohort: Cohort, name: str, bins: int = DEFAULT_BINS) -> Binning:
    """Phenotype ``name`` binned over the whole cohort: the one binning every histogram of it uses."""

    def compute() -> Binning:
        spec = cohort.phenotype_specs[name]
        return bin_phenotype(cohort.phenotype(name), spec.type, spec.categories, bins=bins)

    spec = cohort.phenotype_specs[name]
    return derived(cohort, ("binning", name, bins if spec.type == "continuous" else 0), compute)


def phenotype_sums(cohort: Cohort) -> PhenotypeSums:
    """Every phenotype ready to sum over a group (:class:`~lse_panel.analysis.compare.PhenotypeSums`), once per process."""
    return derived(cohort, "phenotype_sums", lambda: PhenotypeSums.build(cohort.phenotype_columns, cohort.phenotype_specs))


def phenotype_total(cohort: Cohort) -> PhenotypeStatistics:
    """The whole cohort's :class:`~lse_panel.analysis.compare.PhenotypeStatistics`, once per process."""
    return derived(cohort, "phenotype_total", lambda: phenotype_sums(cohort).rows_sum(np.arange(cohort.n_subjects)))


def prepared_metrics(cohort: Cohort) -> PreparedMetrics:
    """The cohort's :class:`PreparedMetrics`: its layout (score bins) and every subject's score bin, once per process.

    Call it in ``panel serve --setup`` to keep the binning (~1 s at 500k subjects, 12
    classification predictions, on the loaded 2-core machine) off the first page.
    """

    def compute() -> PreparedMetrics:
        tasks = cohort.prediction_tasks()
        return prepare_metrics({name: cohort.phenotype(name) for name in tasks}, tasks, cohort.predictions)

    return derived(cohort, "prepared_metrics", compute)


def cohort_statistics(cohort: Cohort) -> GroupStatistics:
    """Sufficient statistics of every subject's predictions, once per process (~35 ms at 500k)."""
    everyone = np.arange(cohort.n_subjects)
    return derived(
        cohort, "cohort_statistics",
        lambda: group_sufficient_statistics(prepared_metrics(cohort), {"cohort": everyone})["cohort"],
    )


def metric_sums(cohort: Cohort) -> PreparedSums | None:
    """The cohort's predictions as :class:`~lse_panel.analysis.groups.MetricSums`; ``None`` without predictions.

    Not itself cached (it refers to the cohort); what it reads is.
    """
    if not cohort.prediction_tasks():
        return None
    return PreparedSums(prepared_metrics(cohort), partial(cohort_statistics, cohort))


def cohort_metrics(cohort: Cohort) -> pd.DataFrame:
    """Metrics with intervals over the whole cohort (group ``"cohort"``), once per process.

    Returns
    -------
    pandas.DataFrame
        Long format, :data:`~lse_panel.analysis.metric_statistics.METRIC_COLUMNS`.
    """
    return derived(
        cohort, "cohort_metrics",
        lambda: metrics_from_statistics({"cohort": cohort_statistics(cohort)}, prepared_metrics(cohort).layout),
    )


def neighbour_placer(cohort: Cohort, projection_key: str) -> NeighbourPlacer:
    """A fixed sample of subjects to place new latents among on projection ``"<kind>/<method>"``."""
    kind = projection_key.split("/", 1)[0]
    return derived(
        cohort, ("placer", projection_key),
        lambda: NeighbourPlacer.build(cohort.latent(kind), cohort.projection(projection_key)),
    )


def failures(cohort: Cohort, target: str, latent: str, *, policy: PrivacyPolicy, **options: Any) -> pd.DataFrame:
    """:func:`~lse_panel.cohort.slices.find_failures` for one latent kind, searched once per process.

    The search takes seconds at 500k subjects; every later session asking for the same target,
    latent kind, options and privacy floor gets the table at once. Treat it as read-only.

    Parameters
    ----------
    cohort, target, latent
        As :func:`~lse_panel.cohort.slices.find_failures` (``latent`` one kind).
    policy
        The privacy policy whose floor the search applies (part of the key).
    **options
        Further keyword arguments of ``find_failures``; their values must be hashable.
    """
    key = ("failures", target, latent, policy.min_group_size, tuple(sorted(options.items())))
    return derived(cohort, key, lambda: find_failures(cohort, target, latent=latent, policy=policy, **options))
