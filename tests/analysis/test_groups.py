"""The derived groups: rows or masks without gathering the rest, sizes, verdicts, latent sums computed once."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.groups import COMPARISON, SELECTION, BlockSums, GroupSet
from lse_panel.analysis.privacy import PrivacyPolicy

N, D = 200, 4


class CountingSums:
    """BlockSums over a random block, counting the row sums it is asked for."""

    def __init__(self, block: np.ndarray) -> None:
        self.block = block
        self.inner = BlockSums(lambda kind: block, lambda kind: block.sum(axis=0, dtype=np.float64))
        self.row_calls = 0

    def total(self, kind: str) -> np.ndarray:
        return self.inner.total(kind)

    def rows_sum(self, kind: str, rows: np.ndarray) -> np.ndarray:
        self.row_calls += 1
        return self.inner.rows_sum(kind, rows)


@pytest.fixture
def block() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)


def test_rest_is_a_mask_and_its_sums_come_from_the_total(block: np.ndarray) -> None:
    selection = np.arange(10, 70)
    sums = CountingSums(block)
    groups = GroupSet(N, selection, "rest", sums=sums)
    rest = np.setdiff1d(np.arange(N), selection)
    assert groups.sizes == {SELECTION: 60, COMPARISON: N - 60}
    members = groups.members(COMPARISON)
    assert members.dtype == np.bool_ and members.sum() == rest.size and not members[selection].any()
    np.testing.assert_array_equal(groups.rows(COMPARISON), rest)
    np.testing.assert_array_equal(groups.members(SELECTION), selection)
    np.testing.assert_allclose(groups.mean_latent(COMPARISON, "z"), block[rest].astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(groups.mean_latent(SELECTION, "z"), block[selection].astype(np.float64).mean(0), rtol=1e-6)
    assert sums.row_calls == 1  # the selection's sum, once: the rest's is the total minus it
    groups.latent_sum(COMPARISON, "z")
    groups.mean_latent(SELECTION, "z")
    assert sums.row_calls == 1
    assert groups.mask(COMPARISON) is groups.mask(COMPARISON)  # built once
    with pytest.raises(ValueError):
        groups.mask(COMPARISON)[0] = True  # read-only: panes share it


def test_all_and_a_saved_subgroup(block: np.ndarray) -> None:
    selection = np.arange(5, 50)
    everyone = GroupSet(N, selection, "all", sums=CountingSums(block))
    assert everyone.size(COMPARISON) == N and everyone.mask(COMPARISON).all()
    np.testing.assert_allclose(everyone.latent_sum(COMPARISON, "z"), block.sum(0, dtype=np.float64))
    rows = np.arange(100, 130)
    saved = GroupSet(N, selection, "older", rows, sums=CountingSums(block))
    assert saved.comparison_kind == "subgroup" and saved.size(COMPARISON) == 30
    assert saved.members(COMPARISON) is saved.rows(COMPARISON)  # its rows, not a mask
    np.testing.assert_allclose(saved.mean_latent(COMPARISON, "z"), block[rows].astype(np.float64).mean(0), rtol=1e-6)
    assert saved.comparison_name() == "subgroup 'older'" and everyone.comparison_name() == "the whole cohort"
    with pytest.raises(ValueError, match="comparison_rows"):
        GroupSet(N, selection, "older")


def test_empty_groups_are_empty_not_hidden() -> None:
    groups = GroupSet(N, np.empty(0, dtype=np.int64), "rest")
    assert groups.is_empty(SELECTION) and not groups.is_hidden(SELECTION) and not groups.shown(SELECTION)
    assert groups.mean_latent(SELECTION, "z") is None  # a mean of nothing, asked of no sums at all
    everyone = GroupSet(N, np.arange(N), "rest")
    assert everyone.is_empty(COMPARISON) and everyone.hidden == {}


def test_verdicts_come_from_the_policy() -> None:
    policy = PrivacyPolicy(min_group_size=10)
    small = GroupSet(N, np.arange(7), "rest", policy=policy)
    assert set(small.hidden) == {SELECTION, COMPARISON}  # the rest would give the seven away
    assert "fewer than 10 subjects (7)" in small.hidden[SELECTION]
    assert GroupSet(N, np.arange(7), "rest", policy=PrivacyPolicy(min_group_size=1)).hidden == {}


def test_including_more_groups_keeps_what_was_computed(block: np.ndarray) -> None:
    sums = CountingSums(block)
    groups = GroupSet(N, np.arange(40), "rest", policy=PrivacyPolicy(min_group_size=10), sums=sums)
    groups.latent_sum(SELECTION, "z")
    more = groups.including({"few": np.arange(150, 155), "many": np.arange(100, 180)})
    assert more.labels == (SELECTION, COMPARISON, "few", "many")
    assert set(more.hidden) == {"few"} and more.hidden["few"].startswith("few: fewer than 10 subjects (5)")
    more.latent_sum(SELECTION, "z")
    assert sums.row_calls == 1  # carried over
    np.testing.assert_allclose(more.mean_latent("many", "z"), block[100:180].astype(np.float64).mean(0), rtol=1e-6)
    assert groups.including({}) is groups
    with pytest.raises(ValueError, match="taken"):
        groups.including({SELECTION: np.arange(3)})
    with pytest.raises(KeyError, match="no group 'other'"):
        more.size("other")
