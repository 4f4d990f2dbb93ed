"""The differencing guard: refuse a group's aggregates when, beside groups already shown, they would reveal fewer than k subjects."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from lse_panel.analysis.privacy import Groups, PrivacyPolicy

__all__ = ["MAX_REMEMBERED", "DisclosureGuard"]

MAX_REMEMBERED = 1_000
"""Groups a guard remembers (least recently shown forgotten first): 62.5 kB each at 500k subjects."""


class DisclosureGuard:
    """Remembers the groups whose aggregates were shown and refuses one that differs from a known group by < k.

    The privacy floor alone is beaten by differencing: the means of 10 subjects and of the same 10
    plus one give that one's values exactly (11·mean₁₁ − 10·mean₁₀). A group ``G`` is refused when,
    for a set ``T`` whose aggregates follow from what was shown, the symmetric difference ``G △ T``
    is not empty and has fewer than ``min_group_size`` subjects. The sets ``T`` considered:

    - every group shown before, and its complement (the whole cohort's figures are always shown);
    - the union of two shown groups that do not overlap, and the difference of two nested ones
      (``S₁ ∪ S₂`` and ``S₁ \\ S₂`` have known sums), and their complements.

    That catches the two-group attack and its three-group variants (``A``, ``B``, then
    ``A ∪ B ∪ {t}``, in any order). Longer chains of sums and differences are not searched, so this
    is a guard against the easy attacks, not a proof of safety; keep the floor well above 1.

    Groups kept on a Dask cluster (``lse serve --dask``) are not compared: their masks stay on the
    workers. One guard serves one session, or every session of one user (:meth:`for_user`), as a
    :class:`~lse_panel.analysis.privacy.GroupCheck` in the policy's ``checks``: it records each
    group it lets through. Thread-safe.
    """

    _users: ClassVar[dict[str, DisclosureGuard]] = {}
    _users_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self.max_remembered = int(max_remembered)
        self._shown: OrderedDict[bytes, tuple[np.ndarray, int]] = OrderedDict()
        self._n_total: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_user(cls, user: str) -> DisclosureGuard:
        """The one guard of ``user`` in this process, shared by all their sessions (opening a new tab starts nothing afresh)."""
        with cls._users_lock:
            guard = cls._users.get(user)
            if guard is None:
                guard = cls._users[user] = cls()
            return guard

    @property
    def remembered(self) -> int:
        """How many distinct groups it remembers as shown."""
        return len(self._shown)

    def __call__(self, groups: Groups, label: str, policy: PrivacyPolicy) -> str | None:
        """``None`` (and ``label`` remembered as shown) if group ``label`` may be shown, else the reason."""
        k = policy.min_group_size
        try:
            mask = np.asarray(groups.mask(label), dtype=bool)
        except TypeError:
            # Groups kept on a Dask cluster have no mask here: not guarded (README, Security).
            return None
        if k <= 1 or not mask.any():
            return None
        packed = np.packbits(mask)
        size = int(mask.sum())
        with self._lock:
            if self._n_total is not None and self._n_total != mask.size:
                self._shown.clear()  # another cohort: nothing shown of it yet
            self._n_total = int(mask.size)
            gap = self._smallest_gap(packed, size, int(mask.size), k)
            if gap is not None:
                what = groups.describe(label)
                return (
                    f"{what}: hidden, because it differs by fewer than {k} subjects from a group whose figures were "
                    "already shown in this session (or a sum or difference of two of them); side by side the "
                    "figures would reveal those subjects. Change the selection by at least "
                    f"{k} subjects, or clear it"
                )
            key = packed.tobytes()
            self._shown[key] = (packed, size)
            self._shown.move_to_end(key)
            while len(self._shown) > self.max_remembered:
                self._shown.popitem(last=False)
        return None

    def _smallest_gap(self, packed: np.ndarray, size: int, n: int, k: int) -> int | None:
        """A symmetric difference in ``1..k-1`` between the group and a known set, or ``None`` if there is none."""
        if not self._shown:
            return None
        known = list(self._shown.values())
        sizes = np.array([s for _, s in known], dtype=np.int64)

        def close(d: int) -> bool:
            return 0 < d < k or 0 < n - d < k  # the set itself, or its complement

        # Shown groups: |G △ S| ≥ ||G| − |S||, so only sizes within k of |G| (or of n − |G|) can be close.
        near = np.flatnonzero((np.abs(sizes - size) < k) | (np.abs(n - sizes - size) < k))
        for i in near:
            d = _popcount(packed ^ known[i][0])
            if close(d):
                return d
        # Pairs: a disjoint union has size |S₁| + |S₂|, a nested difference |S₁| − |S₂|.
        total = sizes[:, None] + sizes[None, :]
        diff = sizes[:, None] - sizes[None, :]
        for values, combine in ((total, "union"), (diff, "difference")):
            hit = (np.abs(values - size) < k) | (np.abs(n - values - size) < k)
            if combine == "union":
                hit = np.triu(hit, 1)
            else:
                np.fill_diagonal(hit, False)
            for i, j in zip(*np.nonzero(hit)):
                a, b = known[i][0], known[j][0]
                if combine == "union":
                    if _popcount(a & b):
                        continue
                    combined = a | b
                else:
                    if _popcount(b & ~a):
                        continue  # not nested
                    combined = a & ~b
                d = _popcount(packed ^ combined)
                if close(d):
                    return d
        return None


def _popcount(packed: np.ndarray) -> int:
    return int(np.bitwise_count(packed).sum())
