"""The groups a selection implies, derived once per change and read by every pane: rows, sizes, privacy, sums.

A session's state holds one :class:`GroupSet` (``ExplorerState.groups``) and replaces it whenever
the selection, the comparison group or the saved subgroup it names changes. Every pane reads it
instead of deriving the groups again: the selection's rows, the comparison group's rows or mask
(the rest of a 500k cohort is never gathered as indices), sizes, which groups the privacy policy
hides and why, per-group latent sums and per-group metric statistics, each computed at most once
per GroupSet.

This is also the contract a cluster backend implements against: a group is named by a label, and
everything a pane asks of it (``size``, ``mask``, ``rows``, ``members``, ``latent_sum``,
``mean_latent``, ``metric_statistics``) is a method here, so the same panes can run on a GroupSet
whose sums come from Dask workers (:class:`LatentSums`, :class:`MetricSums`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Literal, Mapping, Protocol, TypeVar

import numpy as np

from lse_panel.analysis.decode import latent_sum
from lse_panel.analysis.metric_statistics import (
    GroupStatistics,
    MetricLayout,
    PreparedMetrics,
    group_sufficient_statistics,
)
from lse_panel.analysis.privacy import PrivacyPolicy

__all__ = [
    "BUILTIN_COMPARISONS",
    "COMPARISON",
    "SELECTION",
    "BlockSums",
    "GroupHandle",
    "GroupSet",
    "LatentSums",
    "MetricSums",
    "PreparedSums",
]

SELECTION = "selection"
"""Label of the selected subjects."""

COMPARISON = "comparison"
"""Label of what the selection is compared with (the rest, the whole cohort or a saved subgroup)."""

BUILTIN_COMPARISONS = ("rest", "all")
"""Comparisons every session has; any other comparison names a saved subgroup."""

ComparisonKind = Literal["rest", "all", "subgroup"]
T = TypeVar("T")

_EMPTY = np.empty(0, dtype=np.int64)
_EMPTY.flags.writeable = False


class GroupHandle(Protocol):
    """A group kept where the data lives (a cluster's per-partition masks): its size here, its members there.

    A :class:`GroupSet` holds one in place of rows when its backend keeps groups remotely
    (:class:`~lse_panel.cohort.dask_backend.DaskGroup`); :meth:`GroupSet.members` then hands out
    handles, and :meth:`GroupSet.sum_over` passes them to the sum sources (which sum per partition
    on the workers), never gathering rows.
    """

    size: int

    def complement(self) -> GroupHandle:
        """Everyone not in the group."""
        ...

    def everyone(self) -> GroupHandle:
        """The whole cohort."""
        ...


def _is_handle(group: object) -> bool:
    return not isinstance(group, np.ndarray) and hasattr(group, "complement")


class LatentSums(Protocol):
    """Column sums of a latent block: over every subject (cached, it never changes) and over given rows.

    The in-process implementation is :class:`BlockSums`; a cluster backend sums on its workers.
    """

    def total(self, kind: str) -> np.ndarray:
        """``(d,)`` float64 sum of latent kind ``kind`` over every subject."""
        ...

    def rows_sum(self, kind: str, rows: np.ndarray) -> np.ndarray:
        """``(d,)`` float64 sum of latent kind ``kind`` over the subjects at ``rows`` (sorted int64, or a :class:`GroupHandle`)."""
        ...


@dataclass(frozen=True)
class BlockSums:
    """:class:`LatentSums` over in-memory or memory-mapped blocks.

    Parameters
    ----------
    block
        Latent kind → ``(n, d)`` block (e.g. ``cohort.latent``).
    total
        Latent kind → its column sum over every subject, cached by the caller (computed once per
        process: ~25 ms for 500k × 64).
    """

    block: Callable[[str], np.ndarray]
    total: Callable[[str], np.ndarray]

    def rows_sum(self, kind: str, rows: np.ndarray) -> np.ndarray:
        return latent_sum(self.block(kind), rows)


class MetricSums(Protocol):
    """Per-group sufficient statistics of the predictions (:mod:`lse_panel.analysis.metric_statistics`).

    The in-process implementation is :class:`PreparedSums`; a cluster backend computes them per
    partition and adds them.
    """

    layout: MetricLayout

    def total(self) -> GroupStatistics:
        """The statistics of every subject (cached, it never changes)."""
        ...

    def rows_statistics(self, rows: np.ndarray) -> GroupStatistics:
        """The statistics of the subjects at ``rows`` (sorted int64, or a :class:`GroupHandle`)."""
        ...


@dataclass(frozen=True)
class PreparedSums:
    """:class:`MetricSums` over a cohort's prepared predictions, in process.

    Parameters
    ----------
    prepared
        The cohort's :class:`~lse_panel.analysis.metric_statistics.PreparedMetrics`.
    total
        Returns the statistics of every subject, cached by the caller (once per process).
    """

    prepared: PreparedMetrics
    total: Callable[[], GroupStatistics]

    @property
    def layout(self) -> MetricLayout:
        return self.prepared.layout

    def rows_statistics(self, rows: np.ndarray) -> GroupStatistics:
        return group_sufficient_statistics(self.prepared, {"rows": rows})["rows"]


@dataclass(frozen=True, eq=False)
class GroupSet:
    """The selection, its comparison group and any further named groups, with their privacy verdicts.

    Immutable: a new selection or comparison makes a new GroupSet. Masks, rows of the rest, and
    latent sums are computed on first use and kept, so every pane that asks after the first gets
    them for free. Safe to read from several threads (intervals computed off the interaction
    path, say): two threads asking at once may both compute a value, never a wrong one.

    Parameters
    ----------
    n_total
        Subjects in the cohort.
    selection
        Sorted, unique int64 row indices of the selected subjects, or a :class:`GroupHandle` when
        the backend keeps groups on a cluster (then ``comparison_rows`` and ``extra`` are handles
        too, :meth:`members` hands out handles and :meth:`rows`/:meth:`mask` refuse).
    comparison
        ``"rest"`` (everyone not selected), ``"all"`` (the whole cohort) or a saved subgroup's name.
    comparison_rows
        Sorted int64 rows of that subgroup; required for a subgroup, ignored for ``rest``/``all``.
    extra
        Further groups by label (e.g. the saved subgroups a comparison pane shows beside the
        selection): sorted int64 rows each. See :meth:`including`.
    policy
        The privacy policy whose :meth:`~PrivacyPolicy.verdicts` fill :attr:`hidden`.
    sums
        Where latent sums come from (:class:`LatentSums`); ``None``: :meth:`latent_sum` is unavailable.
    metric_sums
        Where the predictions' sufficient statistics come from (:class:`MetricSums`); ``None``
        (a cohort without predictions): :meth:`metric_statistics` is unavailable.

    Attributes
    ----------
    labels
        ``("selection", "comparison", *extra)``.
    sizes
        ``{label: subjects}``.
    hidden
        ``{label: reason}`` of the groups whose aggregates may not be shown
        (:meth:`PrivacyPolicy.verdicts`); empty groups are never hidden, they are empty.

    Examples
    --------
    >>> groups = GroupSet(10, np.array([1, 2, 3]), "rest", policy=PrivacyPolicy(min_group_size=3))
    >>> groups.sizes
    {'selection': 3, 'comparison': 7}
    >>> int(groups.mask("comparison").sum()), groups.is_hidden("selection")
    (7, False)
    """

    n_total: int
    selection: np.ndarray
    comparison: str = "rest"
    comparison_rows: np.ndarray | None = None
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)
    policy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    sums: LatentSums | None = None
    metric_sums: MetricSums | None = None
    labels: tuple[str, ...] = field(init=False)
    sizes: Mapping[str, int] = field(init=False)
    hidden: Mapping[str, str] = field(init=False)
    _masks: dict[str, np.ndarray] = field(init=False, repr=False)
    _sums: dict[tuple[str, Hashable], Any] = field(init=False, repr=False)
    _base: GroupSet | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        selection = _group(self.selection)
        set_(self, "selection", selection)
        if self.comparison not in BUILTIN_COMPARISONS:
            if self.comparison_rows is None:
                raise ValueError(f"comparison {self.comparison!r} is a saved subgroup: pass its comparison_rows.")
            set_(self, "comparison_rows", _group(self.comparison_rows))
        clash = {SELECTION, COMPARISON} & set(self.extra)
        if clash:
            raise ValueError(f"extra groups may not be called {sorted(clash)}; those labels are taken.")
        set_(self, "extra", {label: _group(rows) for label, rows in self.extra.items()})
        set_(self, "labels", (SELECTION, COMPARISON, *self.extra))
        k, n = _size(selection), int(self.n_total)
        sizes = {SELECTION: k, COMPARISON: {"rest": n - k, "all": n}.get(self.comparison, 0)}
        if self.comparison_kind == "subgroup":
            sizes[COMPARISON] = _size(self.comparison_rows)
        sizes.update({label: _size(rows) for label, rows in self.extra.items()})
        set_(self, "sizes", sizes)
        set_(self, "_masks", {})
        set_(self, "_sums", {})
        set_(self, "_base", None)
        set_(self, "hidden", self.policy.verdicts(self))

    @property
    def remote(self) -> bool:
        """Whether the groups are handles kept on a cluster rather than rows here."""
        return _is_handle(self.selection)

    # -- what the groups are ------------------------------------------------------------
    @property
    def comparison_kind(self) -> ComparisonKind:
        """``"rest"``, ``"all"`` or ``"subgroup"``."""
        return self.comparison if self.comparison in BUILTIN_COMPARISONS else "subgroup"  # type: ignore[return-value]

    def describe(self, label: str) -> str:
        """How messages name group ``label``: ``"selection"``, ``"comparison group"``, or the label itself."""
        self._check(label)
        return {SELECTION: "selection", COMPARISON: "comparison group"}.get(label, label)

    def comparison_name(self) -> str:
        """The comparison group in words: ``"the rest of the cohort"``, ``"the whole cohort"``, ``"subgroup 'x'"``."""
        return {"rest": "the rest of the cohort", "all": "the whole cohort"}.get(
            self.comparison, f"subgroup {self.comparison!r}"
        )

    def size(self, label: str) -> int:
        """Subjects in group ``label`` (no rows gathered)."""
        self._check(label)
        return self.sizes[label]

    def is_hidden(self, label: str) -> bool:
        """Whether the privacy policy hides group ``label``'s aggregates (see :attr:`hidden`)."""
        self._check(label)
        return label in self.hidden

    def is_empty(self, label: str) -> bool:
        """Whether group ``label`` has no subjects."""
        return self.size(label) == 0

    def shown(self, label: str) -> bool:
        """Whether group ``label`` has subjects and may be shown: what a pane checks before an aggregate."""
        return not self.is_empty(label) and not self.is_hidden(label)

    # -- members ------------------------------------------------------------------------
    def members(self, label: str) -> np.ndarray:
        """Group ``label`` as the analysis functions take it: sorted rows, or a boolean mask for the rest and the cohort.

        The cheaper form of each group: the selection and subgroups as their rows, the rest of
        the cohort and the whole cohort as a mask (never gathered as indices). With remote
        groups, a :class:`GroupHandle` (the rest is the selection's complement).
        """
        if self.remote:
            self._check(label)
            if label == SELECTION:
                return self.selection
            if label == COMPARISON:
                kind = self.comparison_kind
                return {"rest": self.selection.complement, "all": self.selection.everyone}.get(
                    kind, lambda: self.comparison_rows
                )()
            return self.extra[label]
        if label == COMPARISON and self.comparison_kind != "subgroup":
            return self.mask(label)
        return self.rows(label)

    def rows(self, label: str) -> np.ndarray:
        """Sorted int64 row indices of group ``label`` (for the rest or the cohort an O(n) gather: prefer :meth:`members`)."""
        self._check(label)
        self._refuse_remote("rows")
        if label == SELECTION:
            return self.selection
        if label == COMPARISON:
            if self.comparison_kind == "subgroup":
                return self.comparison_rows  # type: ignore[return-value]
            return _read_only(np.flatnonzero(self.mask(label)).astype(np.int64))
        return self.extra[label]

    def mask(self, label: str) -> np.ndarray:
        """Boolean mask over the cohort of group ``label`` (read-only, built once)."""
        self._check(label)
        self._refuse_remote("mask")
        if self._base is not None and label in (SELECTION, COMPARISON):
            return self._base.mask(label)
        found = self._masks.get(label)
        if found is None:
            if label == COMPARISON and self.comparison == "rest":
                found = np.ones(self.n_total, dtype=bool)
                found[self.selection] = False
            elif label == COMPARISON and self.comparison == "all":
                found = np.ones(self.n_total, dtype=bool)
            else:
                found = np.zeros(self.n_total, dtype=bool)
                found[self.rows(label)] = True
            self._masks[label] = found = _read_only(found)
        return found

    # -- sums over groups ---------------------------------------------------------------
    def sum_over(self, label: str, key: Hashable, total: Callable[[], T], rows_sum: Callable[[np.ndarray], T]) -> T:
        """A sum over group ``label``'s subjects, computed once per GroupSet and ``key``: the one caching rule.

        The whole cohort's is ``total()``; the rest's is ``total() - `` the selection's, so it
        costs O(selection) (the rest is never gathered); the selection's and a subgroup's are
        ``rows_sum(rows)``. A GroupSet with saved subgroups added (:meth:`including`) shares the
        selection's and comparison's sums with the one it came from.

        Parameters
        ----------
        label
            The group.
        key
            What is summed, e.g. ``("latent", "fused")``; one cache entry per (label, key).
        total
            Returns the sum over every subject (cache it: it never changes).
        rows_sum
            Returns the sum over sorted int64 rows (over a :class:`GroupHandle` when the groups are
            remote). Sums must support ``-`` (arrays, or
            :class:`~lse_panel.analysis.metric_statistics.GroupStatistics`).
        """
        self._check(label)
        if self._base is not None and label in (SELECTION, COMPARISON):
            return self._base.sum_over(label, key, total, rows_sum)
        found = self._sums.get((label, key))
        if found is None:
            if label == COMPARISON and self.comparison == "all":
                found = total()
            elif label == COMPARISON and self.comparison == "rest":
                found = total() - self.sum_over(SELECTION, key, total, rows_sum)
            else:
                found = rows_sum(self.members(label) if self.remote else self.rows(label))
            if isinstance(found, np.ndarray):
                found = _read_only(found)
            self._sums[(label, key)] = found
        return found

    def latent_sum(self, label: str, kind: str) -> np.ndarray:
        """``(d,)`` float64 sum of latent kind ``kind`` over group ``label``, computed once (:meth:`sum_over`)."""
        if self.sums is None:
            raise ValueError("this GroupSet was built without latent sums (sums=None).")
        sums = self.sums
        return self.sum_over(
            label, ("latent", kind), lambda: np.asarray(sums.total(kind), dtype=np.float64),
            lambda rows: np.asarray(sums.rows_sum(kind, rows), dtype=np.float64),
        )

    def mean_latent(self, label: str, kind: str) -> np.ndarray | None:
        """Mean latent ``(d,)`` float64 of group ``label`` in kind ``kind``; ``None`` for an empty group."""
        n = self.size(label)
        return None if n == 0 else self.latent_sum(label, kind) / n

    def metric_statistics(self, label: str) -> GroupStatistics:
        """Sufficient statistics of the predictions in group ``label``, computed once (:meth:`sum_over`).

        Turn them into metrics with :func:`~lse_panel.analysis.metric_statistics.metrics_from_statistics`.
        """
        if self.metric_sums is None:
            raise ValueError("this GroupSet was built without metric sums (metric_sums=None): the cohort has no predictions.")
        return self.sum_over(label, "metrics", self.metric_sums.total, self.metric_sums.rows_statistics)

    # -- more groups ------------------------------------------------------------------------
    def including(self, extra: Mapping[str, np.ndarray]) -> GroupSet:
        """This GroupSet with further labelled groups (their verdicts added), sharing its selection's and comparison's caches.

        Parameters
        ----------
        extra
            Label → sorted int64 rows; labels may not be ``"selection"`` or ``"comparison"``.
        """
        if not extra and not self.extra:
            return self
        out = GroupSet(
            self.n_total, self.selection, self.comparison, self.comparison_rows, dict(extra), self.policy, self.sums,
            self.metric_sums,
        )
        # The selection's and comparison's masks, sums and statistics are the base set's: whichever
        # pane asks first computes them once for every pane.
        object.__setattr__(out, "_base", self._base or self)
        return out

    def _refuse_remote(self, what: str) -> None:
        if self.remote:
            raise TypeError(
                f"GroupSet.{what}(): these groups are kept on a cluster; pass GroupSet.members() to the backend instead."
            )

    def _check(self, label: str) -> None:
        if label not in self.sizes:
            raise KeyError(f"no group {label!r}; this GroupSet has {', '.join(self.labels)}.")


def _group(rows: object) -> object:
    return rows if _is_handle(rows) else _read_only(np.asarray(rows, dtype=np.int64))


def _size(rows: object) -> int:
    return int(rows.size) if _is_handle(rows) else int(np.asarray(rows).size)


def _read_only(a: np.ndarray) -> np.ndarray:
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a
