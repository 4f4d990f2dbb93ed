"""The privacy floor: the one place every aggregate and individual-level view is checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd

from lse_panel.config import SETTINGS, Settings

__all__ = ["PRIVACY_MODES", "GroupCheck", "Groups", "PrivacyError", "PrivacyPolicy", "default_mode", "dense_cell_centres"]

PRIVACY_MODES = ("aggregate", "full")
"""``aggregate``: groups of at least the floor only, nothing of a single subject; ``full``: every view."""


def default_mode(manifest: Mapping[str, Any] | None) -> str:
    """The privacy mode a cohort gets unless one is asked for: ``full`` for synthetic cohorts only.

    A bundle of real subjects (any whose manifest does not say its raw records are synthetic)
    defaults to ``aggregate``: individual-level views must be asked for.
    """
    raw = (manifest or {}).get("raw") or {}
    return "full" if isinstance(raw, Mapping) and raw.get("source") == "synthetic" else "aggregate"


class Groups(Protocol):
    """What :meth:`PrivacyPolicy.verdicts` reads of a set of groups (:class:`lse_panel.analysis.groups.GroupSet` is one)."""

    n_total: int
    labels: tuple[str, ...]

    def size(self, label: str) -> int:
        """Subjects in group ``label``."""
        ...

    def mask(self, label: str) -> np.ndarray:
        """Boolean mask over the cohort of group ``label`` (for checks that compare memberships)."""
        ...

    def describe(self, label: str) -> str:
        """How a message names group ``label`` (``"selection"``, ``"comparison group"``, ...)."""
        ...


class GroupCheck(Protocol):
    """A further rule :meth:`PrivacyPolicy.verdicts` applies to each group the built-in rules let through.

    The place for a per-session disclosure guard: one that remembers the groups whose aggregates
    were shown and refuses a group whose symmetric difference with any of them is non-empty and
    smaller than the floor (two lassos differing by three subjects give those three away).
    """

    def __call__(self, groups: Groups, label: str, policy: PrivacyPolicy) -> str | None:
        """``None`` if group ``label`` of ``groups`` may be shown, else the reason (for the pane to show)."""
        ...


class PrivacyError(Exception):
    """An aggregate or an individual-level view the privacy policy does not allow.

    The message is written for the person looking at the pane: it says what is hidden and why.
    """


@dataclass(frozen=True)
class PrivacyPolicy:
    """What may be shown: aggregates of at least ``min_group_size`` subjects, individuals or not.

    Biobank access agreements forbid showing individual-level data outside a project. Every
    pane asks this object before it shows an aggregate (decoded mean, accuracy metric, group
    comparison, histogram) and before any individual-level view (subject inspector, raw
    records, id export), so one setting switches the whole application.

    Parameters
    ----------
    min_group_size
        Smallest group an aggregate may describe; ``1`` (or ``0``) turns the floor off.
    individual_views
        Whether views of single subjects (and exports of subject ids) are allowed at all.
    checks
        Further :class:`GroupCheck` rules :meth:`verdicts` applies (e.g. a session's disclosure guard).
    """

    min_group_size: int = SETTINGS.min_group_size
    individual_views: bool = True
    checks: tuple[GroupCheck, ...] = ()
    """Further rules applied by :meth:`verdicts` after the size floor (see :class:`GroupCheck`)."""

    def __post_init__(self) -> None:
        if isinstance(self.min_group_size, bool) or not isinstance(self.min_group_size, (int, np.integer)):
            raise TypeError(f"min_group_size must be an integer; got {self.min_group_size!r}.")
        if self.min_group_size < 0:
            raise ValueError(f"min_group_size must be 0 or more; got {self.min_group_size}.")

    @classmethod
    def for_mode(cls, mode: str, *, min_group_size: int | None = None, checks: tuple[GroupCheck, ...] = ()) -> PrivacyPolicy:
        """The policy of privacy mode ``mode`` (one of :data:`PRIVACY_MODES`), with the floor of the settings by default."""
        if mode not in PRIVACY_MODES:
            raise ValueError(f"privacy mode {mode!r} is not one of {', '.join(PRIVACY_MODES)}.")
        floor = SETTINGS.min_group_size if min_group_size is None else min_group_size
        return cls(min_group_size=floor, individual_views=mode == "full", checks=checks)

    @property
    def mode(self) -> str:
        """``"full"`` when individual-level views are on, else ``"aggregate"``."""
        return "full" if self.individual_views else "aggregate"

    def describe(self) -> str:
        """One line for the page: the mode and what it shows."""
        if self.individual_views:
            return f"privacy: full (individual-level views on; aggregates of ≥ {self.min_group_size} subjects)"
        return f"privacy: aggregate (groups of ≥ {self.min_group_size} subjects only; nothing of a single subject)"

    def count_text(self, n: int, total: int | None = None) -> str:
        """How a count of ``n`` subjects (of ``total``) may be shown: exact, or ``<k`` in aggregate mode.

        In aggregate mode a count between 1 and the floor shows as ``<k`` (``✓ 1 subjects match``
        and a binary search over thresholds would give one subject's values away), and so does the
        number left out when that is below the floor (``>total−k``). With individual-level views on,
        or outside those bands, the exact count.
        """
        n = int(n)
        k = self.min_group_size
        if self.individual_views or k <= 1:
            return f"{n:,}"
        if 0 < n < k:
            return f"<{k:,}"
        if total is not None and 0 < int(total) - n < k:
            return f">{int(total) - k:,}"
        return f"{n:,}"

    def suppress_small_cells(self, counts: np.ndarray) -> np.ndarray:
        """``counts`` (subjects per histogram bin) with every bin of 1 to k−1 subjects set to 0, in aggregate mode.

        A histogram bar of one or two subjects says where those subjects' values lie (the oldest
        subject's age bin); in aggregate mode such bins are not drawn. With individual-level views
        on, or no floor, the counts as given.
        """
        counts = np.asarray(counts)
        if self.individual_views or self.min_group_size <= 1:
            return counts
        return np.where((counts > 0) & (counts < self.min_group_size), 0, counts)

    @classmethod
    def from_settings(cls, settings: Settings = SETTINGS, *, individual_views: bool = True) -> PrivacyPolicy:
        """The policy the application's :class:`~lse_panel.config.Settings` ask for."""
        return cls(min_group_size=settings.min_group_size, individual_views=individual_views)

    # -- aggregates -----------------------------------------------------------------------
    def allows(self, n: int) -> bool:
        """Whether an aggregate over ``n`` subjects may be shown."""
        return int(n) >= self.min_group_size

    def check(self, n: int, what: str = "") -> str | None:
        """``None`` when an aggregate over ``n`` subjects may be shown, else the reason it may not.

        Parameters
        ----------
        n
            Number of subjects the aggregate is computed from.
        what
            What is being shown, e.g. ``"selection"``; it starts the message when given.

        Returns
        -------
        str or None
            For example ``"fewer than 10 subjects (7): aggregates hidden to protect privacy"``,
            for the pane to display in place of the aggregate.
        """
        n = int(n)
        if n >= self.min_group_size:
            return None
        reason = f"fewer than {self.min_group_size} subjects ({n}): aggregates hidden to protect privacy"
        return f"{what}: {reason}" if what else reason

    def verdicts(self, groups: Groups) -> dict[str, str]:
        """Which groups' aggregates may not be shown, and why: ``{label: reason}``; the one place the rule is written.

        A group is hidden when

        - it is not empty and has fewer than ``min_group_size`` subjects (:meth:`check`); or
        - the subjects *outside* it are not none and fewer than ``min_group_size``: the whole
          cohort's figures are on the page too (the filter histograms, the accuracy pane's cohort
          column), so the group's aggregate next to the cohort's gives the few left out away by
          subtraction. With the comparison "the rest of the cohort", the rest is the selection's
          complement and the reverse, so a small selection hides the rest and a small rest hides
          the selection; or
        - one of :attr:`checks` refuses it.

        An empty group is not hidden: the panes say it is empty.

        Parameters
        ----------
        groups
            The groups on the page (a :class:`~lse_panel.analysis.groups.GroupSet`).

        Returns
        -------
        dict
            ``{label: reason}``, reasons written for the person looking at the pane.
        """
        reasons: dict[str, str] = {}
        n = int(groups.n_total)
        for label in groups.labels:
            size = int(groups.size(label))
            what = groups.describe(label)
            reason = self.check(size, what) if size else None
            outside = n - size
            if reason is None and 0 < outside < self.min_group_size:
                reason = (
                    f"{what}: hidden, because next to the whole cohort's figures it would reveal the "
                    f"{outside} subjects left out (fewer than {self.min_group_size} subjects)"
                )
            for check in self.checks:
                if reason is not None:
                    break
                reason = check(groups, label, self)
            if reason is not None:
                reasons[label] = reason
        return reasons

    def guard(self, n: int, what: str = "") -> None:
        """Raise :class:`PrivacyError` (with :meth:`check`'s reason) unless ``n`` is large enough."""
        reason = self.check(n, what)
        if reason is not None:
            raise PrivacyError(reason)

    def filter_table(
        self,
        df: pd.DataFrame,
        n_col: str | Sequence[str] = "n",
        *,
        reason_col: str | None = "reason",
        keep: Sequence[str] = (),
    ) -> pd.DataFrame:
        """Mask the rows of a metrics or comparison table computed from too few subjects.

        In a masked row every numeric column except the counts in ``n_col`` and the columns in
        ``keep`` becomes NaN, and ``reason_col`` (added if missing) says why. Label columns
        (phenotype, group, metric...) are kept, so the table keeps its shape and the pane can
        show the reason where the number would be. The group sizes themselves stay visible, as
        :meth:`check`'s message shows them too.

        Parameters
        ----------
        df
            Long- or wide-format table, one row per aggregate.
        n_col
            Column (or columns, e.g. both groups' sizes of a comparison) holding the number of
            subjects behind each row; a row is masked when any of them is below the floor.
        reason_col
            Column that receives the reason for masked rows (existing reasons of other rows are
            left alone); ``None`` adds none.
        keep
            Further numeric columns that are identifiers rather than aggregates.

        Returns
        -------
        pandas.DataFrame
            A copy; ``df`` is not modified.
        """
        n_cols = [n_col] if isinstance(n_col, str) else list(n_col)
        missing = [c for c in n_cols if c not in df.columns]
        if missing:
            raise KeyError(
                f"filter_table: no column {missing[0]!r} holding group sizes; the table has "
                f"{', '.join(map(str, df.columns))}. Pass n_col=..."
            )
        out = df.copy()
        if out.empty:
            return out
        sizes = out[n_cols].to_numpy(dtype=float)
        # A missing size cannot be shown to be large enough, so the row is hidden.
        smallest = np.where(np.isnan(sizes), -np.inf, sizes).min(axis=1)
        hidden = smallest < self.min_group_size
        if not hidden.any():
            return out
        exempt = set(n_cols) | set(keep) | ({reason_col} if reason_col else set())
        for column in out.columns:
            if column in exempt:
                continue
            if pd.api.types.is_numeric_dtype(out[column]) and not pd.api.types.is_bool_dtype(out[column]):
                if not pd.api.types.is_float_dtype(out[column]):
                    # Integers and the like cannot hold NaN: widen before masking.
                    out[column] = out[column].astype(float)
                out.loc[hidden, column] = np.nan
        if reason_col:
            reasons = [self.check(s) if np.isfinite(s) else self.check(0) for s in smallest[hidden]]
            if reason_col not in out.columns:
                out[reason_col] = None
            out[reason_col] = out[reason_col].astype(object)
            out.loc[hidden, reason_col] = reasons
        return out

    # -- individual-level views ------------------------------------------------------------
    def check_individual(self, what: str = "individual-level data") -> str | None:
        """``None`` when individual-level views are allowed, else the reason they are not."""
        if self.individual_views:
            return None
        return f"{what} hidden: individual-level views are switched off by the privacy policy"

    def guard_individual(self, what: str = "individual-level data") -> None:
        """Raise :class:`PrivacyError` when individual-level views are switched off."""
        reason = self.check_individual(what)
        if reason is not None:
            raise PrivacyError(reason)


def dense_cell_centres(
    x: np.ndarray,
    y: np.ndarray,
    extent: tuple[tuple[float, float], tuple[float, float]],
    *,
    bins: int = 64,
    min_count: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the cells of a ``bins × bins`` grid over ``extent`` that hold at least ``min_count`` points.

    How aggregate mode draws a group's members on a map: one mark per well-filled cell instead of
    one per subject, so no mark stands for fewer than ``min_count`` subjects. Points outside the
    extent or not finite are ignored.

    Returns
    -------
    tuple of numpy.ndarray
        The kept cells' centre coordinates ``(cx, cy)``.
    """
    (x0, x1), (y0, y1) = extent
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    counts, xe, ye = np.histogram2d(x, y, bins=bins, range=[[x0, x1], [y0, y1]])
    ix, iy = np.nonzero(counts >= max(int(min_count), 1))
    return (xe[ix] + xe[ix + 1]) / 2, (ye[iy] + ye[iy + 1]) / 2
