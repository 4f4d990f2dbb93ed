"""The differencing guard: two groups differing by fewer than k subjects are never both shown."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.disclosure import DisclosureGuard
from lse_panel.analysis.groups import COMPARISON, SELECTION, GroupSet
from lse_panel.analysis.privacy import PrivacyPolicy

K, N = 10, 1_000


def _policy(guard: DisclosureGuard | None = None) -> PrivacyPolicy:
    return PrivacyPolicy(min_group_size=K, individual_views=False, checks=(guard if guard is not None else DisclosureGuard(),))


def _shown(policy: PrivacyPolicy, rows, comparison: str = "all", comparison_rows=None) -> bool:
    groups = GroupSet(N, np.asarray(sorted(rows), dtype=np.int64), comparison, comparison_rows, policy=policy)
    return SELECTION not in groups.hidden


def test_ten_then_eleven_is_refused_with_a_reason() -> None:
    policy = _policy()
    assert _shown(policy, range(10))
    groups = GroupSet(N, np.arange(11), "all", policy=policy)
    assert "differs by fewer than 10 subjects from a group whose figures were already shown" in groups.hidden[SELECTION]
    # And the other way round: eleven first, then ten.
    policy = _policy()
    assert _shown(policy, range(11))
    assert not _shown(policy, range(10))


@pytest.mark.parametrize("step", [1, 4, 9])
def test_any_change_smaller_than_the_floor_is_refused(step: int) -> None:
    policy = _policy()
    assert _shown(policy, range(100))
    assert not _shown(policy, range(100 + step))  # added
    assert not _shown(policy, range(step, 100))  # removed
    swapped = [*range(step, 100), *range(200, 200 + step)]  # |△| = 2·step
    assert _shown(policy, swapped) == (2 * step >= K)
    assert _shown(policy, range(100 + K))  # changed by the floor: allowed


def test_same_group_again_and_unrelated_groups_are_shown() -> None:
    policy = _policy()
    assert _shown(policy, range(50))
    assert _shown(policy, range(50))
    assert _shown(policy, range(500, 560))
    assert _shown(policy, range(0, 100))


def test_complement_of_a_shown_group_counts_as_known() -> None:
    # The cohort's figures are always on the page, so a shown group's complement is known too.
    policy = _policy()
    assert _shown(policy, range(400))
    # The complement of range(400) plus three subjects differs from a known set by 3.
    assert not _shown(policy, [*range(400, N), 0, 1, 2])


def test_three_groups_union_of_two_disjoint_plus_target() -> None:
    policy = _policy()
    a, b, target = list(range(10)), list(range(10, 20)), [500]
    assert _shown(policy, a)
    assert _shown(policy, b)
    assert not _shown(policy, a + b + target)  # mean(A∪B∪t)·21 − 10·mean(A) − 10·mean(B) = t


def test_three_groups_union_first_then_parts() -> None:
    policy = _policy()
    a, b, target = list(range(10)), list(range(10, 20)), [500]
    assert _shown(policy, a + b + target)
    assert _shown(policy, a)  # differs from the union by 11
    assert not _shown(policy, b)  # (A∪B∪t) \ A differs from B by t alone


def test_three_groups_nested_difference() -> None:
    policy = _policy()
    big, inner = list(range(40)), list(range(20))
    assert _shown(policy, big)
    assert _shown(policy, inner)
    # big \ inner is rows 20..39: a group of those less one subject gives that one away.
    assert not _shown(policy, range(21, 40))
    assert _shown(policy, range(20, 40))  # exactly big \ inner: nothing new


def test_extra_groups_and_subgroup_comparisons_are_guarded_too() -> None:
    policy = _policy()
    groups = GroupSet(N, np.arange(30), "all", extra={"saved": np.arange(100, 130)}, policy=policy)
    assert not groups.hidden
    groups = GroupSet(N, np.arange(300, 400), "lvh", np.arange(100, 131), policy=policy)
    assert COMPARISON in groups.hidden


def test_a_users_sessions_share_one_guard() -> None:
    first, second = DisclosureGuard.for_user("alice@example.org"), DisclosureGuard.for_user("alice@example.org")
    assert first is second and DisclosureGuard.for_user("bob") is not first
    assert _shown(_policy(first), range(600, 650))
    assert not _shown(_policy(second), range(600, 651))  # a new tab of the same user


def test_memory_is_capped() -> None:
    guard = DisclosureGuard(max_remembered=3)
    policy = _policy(guard)
    for start in range(0, 500, 100):
        assert _shown(policy, range(start, start + 50))
    assert guard.remembered == 3
