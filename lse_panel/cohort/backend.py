"""The data backend: everything the panes ask of a cohort, answered in this process or on a Dask cluster.

A pane never reads a whole column itself: it asks its session's backend for a small result (a
point frame to rasterise, a selection, per-group sufficient statistics turned into a table, a
capped sample of rows). Two implementations:

- :class:`InProcessBackend`: numpy over the (memory-mapped) bundle, the analysis layer's functions
  called directly. A group is its sorted rows (or, for "everyone not selected", a mask).
- :class:`~lse_panel.cohort.dask_backend.DaskBackend`: the cohort persisted on a ``distributed``
  cluster, one pandas partition per row range. A group is a :class:`~lse_panel.analysis.groups.GroupHandle`:
  boolean masks kept on the workers beside their partitions, plus the count. Statistics are
  computed per partition and added; only they come back.

Only :mod:`lse_panel.cohort.dask_backend` imports dask, and only when a cluster is asked for.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from lse_panel.analysis.compare import PhenotypeStatistics
from lse_panel.analysis.groups import LatentSums, MetricSums
from lse_panel.analysis.histograms import DEFAULT_BINS, Binning
from lse_panel.analysis.phenotype_filters import filter_mask
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.analysis.sampling import sample_rows
from lse_panel.analysis.selection import box_mask, combine, lasso_mask, mask_to_indices
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.ids import rows_of_ids
from lse_panel.cohort.derived import (
    derived,
    failures,
    latent_sums,
    metric_sums,
    phenotype_binning,
    phenotype_sums,
    phenotype_total,
)
from lse_panel.cohort.rules import apply_rule
from lse_panel.cohort.slices import find_failures
from lse_panel.cohort.schema import PhenotypeSpec

if TYPE_CHECKING:
    from lse_panel.cohort.subgroups import SubgroupStore

__all__ = ["DataBackend", "InProcessBackend", "Members", "PhenotypeSource", "in_process", "points_frame"]

Members = Any
"""A group as a backend holds it: sorted int64 rows or a boolean mask in process, a
:class:`~lse_panel.analysis.groups.GroupHandle` on a cluster. Panes pass it back without looking inside."""


@dataclass(frozen=True)
class PhenotypeSource:
    """Where :meth:`GroupSet.sum_over` gets a group's phenotype statistics (:class:`~lse_panel.analysis.compare.PhenotypeStatistics`).

    ``total()`` is every subject's (cached by the backend); ``rows_sum(members)`` a group's: one
    pass over its rows in process, per partition on the workers of a cluster (then added).
    """

    total: Callable[[], PhenotypeStatistics]
    rows_sum: Callable[[Any], PhenotypeStatistics]


def points_frame(
    coords: np.ndarray,
    values: np.ndarray | None = None,
    *,
    name: str | None = None,
    spec: PhenotypeSpec | None = None,
    x: str = "x",
    y: str = "y",
) -> pd.DataFrame:
    """A DataFrame over ``coords`` (n, 2) and an optional colour column, sharing memory where possible.

    Integer-coded categorical phenotypes become a pandas ``Categorical`` (codes shared, -1 → NaN)
    so datashader can aggregate them per category.
    """
    columns: dict[str, object] = {x: coords[:, 0], y: coords[:, 1]}
    if values is not None:
        if name is None:
            raise ValueError("points_frame: pass name= for the colour column")
        if spec is not None and spec.type != "continuous":
            values = pd.Categorical.from_codes(np.asarray(values).astype(np.int8, copy=False), list(spec.categories))
        columns[name] = values
    return pd.DataFrame(columns, copy=False)


def selection_frame(data: pd.DataFrame, indices: np.ndarray, *, x: str = "x", y: str = "y") -> pd.DataFrame:
    """The coordinates of rows ``indices`` of ``data``: what the selection highlight aggregates.

    Two gathers into a new two-column frame: about 0.2 ms for 140k of 500k rows, so cheaper than
    aggregating all rows with a weights column (about 4 ms); measured in bench_explorer.py.
    """
    idx = np.asarray(indices, dtype=np.int64)
    return pd.DataFrame({x: data[x].to_numpy()[idx], y: data[y].to_numpy()[idx]}, copy=False)


def data_extent(coords: np.ndarray, pad: float = 0.03) -> tuple[tuple[float, float], tuple[float, float]]:
    """Padded ``((xmin, xmax), (ymin, ymax))`` of ``coords``; degenerate axes get a unit width."""
    lo = np.asarray(coords).min(axis=0).astype(np.float64)
    hi = np.asarray(coords).max(axis=0).astype(np.float64)
    return padded_extent(lo, hi, pad)


def padded_extent(lo: np.ndarray, hi: np.ndarray, pad: float = 0.03) -> tuple[tuple[float, float], tuple[float, float]]:
    """``data_extent`` from per-axis minima and maxima (which a cluster reduces partition by partition)."""
    span = np.where(hi > lo, hi - lo, 1.0)
    lo, hi = lo - pad * span, hi + pad * span
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


class DataBackend(abc.ABC):
    """What every pane asks of the cohort; see the module docstring for the two implementations.

    Attributes
    ----------
    cohort
        The cohort's description (phenotype specs, modalities, manifest, which latents,
        projections and predictions exist). In process its columns are the real arrays; on a
        cluster they are :class:`~lse_panel.cohort.dask_backend.RemoteColumn`\\ s that fetch a few
        rows on indexing and refuse to be copied whole.
    """

    cohort: Cohort

    @property
    def n_subjects(self) -> int:
        return self.cohort.n_subjects

    # -- the map --------------------------------------------------------------------------------
    @abc.abstractmethod
    def points(self, key: str, color_by: str | None = None) -> Any:
        """Frame of ``x``, ``y`` (and ``color_by``) of projection ``key`` for datashader: pandas or dask."""

    @abc.abstractmethod
    def extent(self, key: str) -> tuple[tuple[float, float], tuple[float, float]]:
        """Padded ``((xmin, xmax), (ymin, ymax))`` of projection ``key``."""

    @abc.abstractmethod
    def highlight(self, key: str, members: Members) -> Any:
        """The selected subjects' ``x``, ``y`` on projection ``key``, as a frame datashader aggregates."""

    @abc.abstractmethod
    def nearest(self, key: str, x: float, y: float) -> int:
        """Row of the subject nearest ``(x, y)`` on projection ``key``."""

    # -- selections -----------------------------------------------------------------------------
    @abc.abstractmethod
    def select_box(self, key: str, bounds: tuple[float, float, float, float]) -> Members:
        """Subjects inside ``(x0, y0, x1, y1)`` on projection ``key``."""

    @abc.abstractmethod
    def select_lasso(self, key: str, xs: np.ndarray, ys: np.ndarray) -> Members:
        """Subjects inside the polygon ``xs``, ``ys`` on projection ``key`` (even–odd rule)."""

    @abc.abstractmethod
    def from_rows(self, rows: np.ndarray) -> Members:
        """The subjects at sorted, unique ``rows`` (ids the user typed, a saved subgroup's rows)."""

    @abc.abstractmethod
    def select_ids(self, ids: Sequence[Any] | np.ndarray) -> Members:
        """The subjects with these ids; ``KeyError`` naming some unknown ones."""

    @abc.abstractmethod
    def combine(self, current: Members | None, new: Members, mode: str) -> Members:
        """``new`` combined with ``current`` (``None``: nothing yet) by ``new``/``add``/``intersect``/``subtract``."""

    @abc.abstractmethod
    def restrict(self, region: Members | None, filters: Mapping[str, Any]) -> Members:
        """The subjects of ``region`` (``None``: everyone) passing every phenotype filter."""

    @abc.abstractmethod
    def size(self, members: Members) -> int:
        """Subjects in a group."""

    @abc.abstractmethod
    def same(self, a: Members, b: Members) -> bool:
        """Whether two groups hold the same subjects."""

    @abc.abstractmethod
    def rows(self, members: Members) -> np.ndarray:
        """A group's sorted int64 rows. On a cluster this gathers them: for explicit requests (save, export), never per selection."""

    @abc.abstractmethod
    def ids_at(self, rows: np.ndarray) -> np.ndarray:
        """Subject ids at ``rows`` (an explicit request: a rule or an export)."""

    @abc.abstractmethod
    def sample(self, members: Members, k: int, *, seed: int = 0) -> np.ndarray:
        """A capped, reproducible sample of at most ``k`` of a group's rows, as :func:`~lse_panel.analysis.sampling.sample_rows` draws it."""

    @abc.abstractmethod
    def subgroup(self, store: SubgroupStore, name: str) -> Members:
        """The members of saved subgroup ``name``, looked up by id where the data lives."""

    # -- statistics -----------------------------------------------------------------------------
    @abc.abstractmethod
    def latent_sums(self) -> LatentSums:
        """Where :class:`~lse_panel.analysis.groups.GroupSet` gets per-group latent sums."""

    @abc.abstractmethod
    def binning(self, name: str, bins: int = DEFAULT_BINS) -> Binning:
        """Phenotype ``name`` binned over the whole cohort (edges or categories, cohort counts)."""

    @abc.abstractmethod
    def bin_counts(self, name: str, members: Members, bins: int = DEFAULT_BINS) -> np.ndarray:
        """A group's subjects per bin of :meth:`binning`."""

    @abc.abstractmethod
    def phenotype_sums(self) -> PhenotypeSource:
        """Where :class:`~lse_panel.analysis.groups.GroupSet` gets per-group phenotype statistics (the comparison)."""

    @abc.abstractmethod
    def metric_sums(self) -> MetricSums | None:
        """Where :class:`~lse_panel.analysis.groups.GroupSet` gets per-group metric statistics; ``None`` without predictions."""

    @abc.abstractmethod
    def finite_range(self, name: str) -> tuple[float, float]:
        """Smallest and largest finite value of phenotype ``name``."""

    @abc.abstractmethod
    def apply_rule(self, steps: Sequence[Any]) -> Members:
        """:func:`~lse_panel.cohort.rules.apply_rule` of ``steps`` on this cohort, as a group."""

    @abc.abstractmethod
    def find_failures(self, target: str, latent: Any, *, policy: PrivacyPolicy, **options: Any) -> pd.DataFrame:
        """:func:`~lse_panel.cohort.slices.find_failures` on this cohort (searched anew)."""

    @abc.abstractmethod
    def failures(self, target: str, latent: str, *, policy: PrivacyPolicy, **options: Any) -> pd.DataFrame:
        """:func:`~lse_panel.cohort.derived.failures`: the search for one latent kind, once per process (read-only)."""

    def close(self) -> None:
        """Let go of what the backend holds (a cluster's persisted data); the in-process backend holds nothing."""


class InProcessBackend(DataBackend):
    """The cohort's (memory-mapped) arrays in this process; every call is the analysis layer's function.

    One per cohort and process (:func:`in_process`): its point frames, binnings and prepared
    metrics are shared by every session.
    """

    def __init__(self, cohort: Cohort) -> None:
        self.cohort = cohort
        self._frames: dict[tuple[str, str | None], pd.DataFrame] = {}

    # -- the map --------------------------------------------------------------------------------
    def points(self, key: str, color_by: str | None = None) -> pd.DataFrame:
        cached = self._frames.get((key, color_by))
        if cached is None:
            values = self.cohort.phenotype(color_by) if color_by else None
            spec = self.cohort.phenotype_specs.get(color_by) if color_by else None
            cached = points_frame(self.cohort.projection(key), values, name=color_by, spec=spec)
            self._frames[(key, color_by)] = cached
        return cached

    def extent(self, key: str) -> tuple[tuple[float, float], tuple[float, float]]:
        return derived(self.cohort, ("extent", key), lambda: data_extent(np.asarray(self.cohort.projection(key))))

    def highlight(self, key: str, members: Members) -> pd.DataFrame:
        return selection_frame(self.points(key), self.rows(members))

    def nearest(self, key: str, x: float, y: float) -> int:
        # A brute-force scan: about 2 ms at 500k float32 points, faster than building a KD-tree per
        # projection and process, and nothing to keep in memory.
        coords = self.cohort.projection(key)
        dx = coords[:, 0] - np.float32(x)
        dy = coords[:, 1] - np.float32(y)
        return int(np.argmin(dx * dx + dy * dy))

    # -- selections -----------------------------------------------------------------------------
    def select_box(self, key: str, bounds: tuple[float, float, float, float]) -> np.ndarray:
        coords = self.cohort.projection(key)
        return mask_to_indices(box_mask(coords[:, 0], coords[:, 1], bounds, on_nan="exclude"))

    def select_lasso(self, key: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        coords = self.cohort.projection(key)
        return mask_to_indices(lasso_mask(coords[:, 0], coords[:, 1], xs, ys, on_nan="exclude"))

    def from_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows, dtype=np.int64)

    def select_ids(self, ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        return rows_of_ids(self.cohort, ids)

    def combine(self, current: np.ndarray | None, new: np.ndarray, mode: str) -> np.ndarray:
        return combine(current if current is not None else np.empty(0, np.int64), new, mode)

    def restrict(self, region: np.ndarray | None, filters: Mapping[str, Any]) -> np.ndarray:
        mask = filter_mask(self.cohort.phenotype_columns, self.cohort.phenotype_specs, filters)
        if mask is None:
            return np.empty(0, dtype=np.int64) if region is None else region
        if region is None:
            return np.flatnonzero(mask).astype(np.int64)
        return region[mask[region]]

    def size(self, members: np.ndarray) -> int:
        members = np.asarray(members)
        return int(np.count_nonzero(members)) if members.dtype == np.bool_ else int(members.size)

    def same(self, a: np.ndarray, b: np.ndarray) -> bool:
        return a is b or np.array_equal(self.rows(a), self.rows(b))

    def rows(self, members: np.ndarray) -> np.ndarray:
        members = np.asarray(members)
        return np.flatnonzero(members).astype(np.int64) if members.dtype == np.bool_ else members

    def ids_at(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.cohort.ids)[rows]

    def sample(self, members: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
        return sample_rows(self.rows(members), k, seed=seed)

    def subgroup(self, store: SubgroupStore, name: str) -> np.ndarray:
        return store.members(name)

    # -- statistics -----------------------------------------------------------------------------
    def latent_sums(self) -> LatentSums:
        return latent_sums(self.cohort)

    def binning(self, name: str, bins: int = DEFAULT_BINS) -> Binning:
        return phenotype_binning(self.cohort, name, bins)

    def bin_counts(self, name: str, members: Members, bins: int = DEFAULT_BINS) -> np.ndarray:
        return self.binning(name, bins).counts(members)

    def phenotype_sums(self) -> PhenotypeSource:
        return PhenotypeSource(partial(phenotype_total, self.cohort), phenotype_sums(self.cohort).rows_sum)

    def metric_sums(self) -> MetricSums | None:
        return metric_sums(self.cohort)

    def finite_range(self, name: str) -> tuple[float, float]:
        def compute() -> tuple[float, float]:
            values = np.asarray(self.cohort.phenotype(name), dtype=np.float64)
            finite = values[np.isfinite(values)]
            return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)

        return derived(self.cohort, ("finite_range", name), compute)

    def apply_rule(self, steps: Sequence[Any]) -> np.ndarray:
        return apply_rule(steps, self.cohort)

    def find_failures(self, target: str, latent: Any, *, policy: PrivacyPolicy, **options: Any) -> pd.DataFrame:
        return find_failures(self.cohort, target, latent=latent, policy=policy, **options)

    def failures(self, target: str, latent: str, *, policy: PrivacyPolicy, **options: Any) -> pd.DataFrame:
        return failures(self.cohort, target, latent, policy=policy, **options)


def in_process(cohort: Cohort) -> InProcessBackend:
    """The process-wide :class:`InProcessBackend` of ``cohort`` (created on first use).

    Kept on the cohort itself: a cache keyed by the cohort (``derived``) must not hold a value
    that refers back to it, and the backend does.
    """
    found = cohort.__dict__.get("_in_process_backend")
    if found is None:
        found = cohort.__dict__.setdefault("_in_process_backend", InProcessBackend(cohort))
    return found


__all__ += ["data_extent", "padded_extent", "selection_frame"]
