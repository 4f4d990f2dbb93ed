"""The privacy floor: thresholds, messages, masked tables, verdicts over groups and the individual-level switch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lse_panel.analysis.groups import GroupSet
from lse_panel.analysis.privacy import PrivacyError, PrivacyPolicy
from lse_panel.config import SETTINGS, Settings


def test_defaults_come_from_settings() -> None:
    assert PrivacyPolicy().min_group_size == SETTINGS.min_group_size == 10
    assert PrivacyPolicy().individual_views is True
    assert PrivacyPolicy.from_settings(Settings(min_group_size=25)).min_group_size == 25


@pytest.mark.parametrize(
    ("n", "allowed"), [(0, False), (1, False), (9, False), (10, True), (11, True), (500_000, True)]
)
def test_threshold_is_inclusive(n: int, allowed: bool) -> None:
    policy = PrivacyPolicy(min_group_size=10)
    assert policy.allows(n) is allowed
    assert (policy.check(n) is None) is allowed
    if allowed:
        policy.guard(n, "selection")
    else:
        with pytest.raises(PrivacyError) as info:
            policy.guard(n, "selection")
        assert str(info.value) == policy.check(n, "selection")


def test_messages_say_why() -> None:
    policy = PrivacyPolicy(min_group_size=10)
    assert policy.check(7) == "fewer than 10 subjects (7): aggregates hidden to protect privacy"
    assert policy.check(np.int64(3), "comparison group") == (
        "comparison group: fewer than 10 subjects (3): aggregates hidden to protect privacy"
    )
    assert PrivacyPolicy(min_group_size=50).check(49) == (
        "fewer than 50 subjects (49): aggregates hidden to protect privacy"
    )


def test_a_floor_of_one_or_zero_shows_everything_but_nothing() -> None:
    assert PrivacyPolicy(min_group_size=1).check(1) is None
    assert PrivacyPolicy(min_group_size=1).check(0) is not None
    assert PrivacyPolicy(min_group_size=0).check(0) is None


@pytest.mark.parametrize("bad", [-1, 2.5, "10", True])
def test_invalid_floor(bad) -> None:
    with pytest.raises((TypeError, ValueError)):
        PrivacyPolicy(min_group_size=bad)


def test_filter_table_masks_small_groups_in_a_metrics_table() -> None:
    table = pd.DataFrame(
        {
            "phenotype": ["age", "age", "af", "af"],
            "group": ["selection", "rest", "selection", "rest"],
            "metric": ["r2", "r2", "auroc", "auroc"],
            "value": [0.5, 0.6, 0.7, 0.8],
            "ci_low": [0.4, 0.5, 0.6, 0.7],
            "n": [7, 993, 7, 993],
            "n_pos": [2, 40, 2, 40],
            "reason": ["", "", "", "few positives"],
        }
    )
    out = PrivacyPolicy(min_group_size=10).filter_table(table)
    hidden = table["n"] < 10
    assert out[["value", "ci_low", "n_pos"]][hidden].isna().all().all()
    pd.testing.assert_frame_equal(out[~hidden], table[~hidden].astype({"n_pos": float}), check_dtype=False)
    assert (out.loc[hidden, "reason"] == "fewer than 10 subjects (7): aggregates hidden to protect privacy").all()
    assert out.loc[3, "reason"] == "few positives"
    # Labels and sizes stay; the input is not modified.
    assert out["phenotype"].tolist() == table["phenotype"].tolist()
    assert out["n"].tolist() == [7, 993, 7, 993]
    assert table["value"].notna().all()


def test_filter_table_with_several_size_columns_and_no_reason_column() -> None:
    table = pd.DataFrame(
        {"phenotype": ["age", "bmi", "lvef"], "smd": [0.1, 0.2, 0.3], "n_a": [50, 5, 50], "n_b": [50, 50, 4]}
    )
    out = PrivacyPolicy().filter_table(table, ["n_a", "n_b"], reason_col=None, keep=())
    assert out["smd"].tolist()[0] == 0.1 and out["smd"].isna().tolist() == [False, True, True]
    assert "reason" not in out.columns
    with_reason = PrivacyPolicy().filter_table(table, ["n_a", "n_b"])
    assert with_reason["reason"].tolist()[1:] == [
        "fewer than 10 subjects (5): aggregates hidden to protect privacy",
        "fewer than 10 subjects (4): aggregates hidden to protect privacy",
    ]
    with pytest.raises(KeyError, match="n_col"):
        PrivacyPolicy().filter_table(table)


def test_filter_table_keeps_named_numeric_columns_and_handles_empty() -> None:
    table = pd.DataFrame({"step": [0, 1], "value": [1, 2], "n": [3, 30]})
    out = PrivacyPolicy().filter_table(table, keep=["step"])
    assert out["step"].tolist() == [0, 1]
    assert np.isnan(out.loc[0, "value"]) and out.loc[1, "value"] == 2
    assert PrivacyPolicy().filter_table(table.iloc[:0]).empty


def test_individual_views_switch() -> None:
    assert PrivacyPolicy().check_individual() is None
    PrivacyPolicy().guard_individual("subject inspector")
    off = PrivacyPolicy(individual_views=False)
    assert "switched off" in off.check_individual("subject inspector")
    with pytest.raises(PrivacyError, match="subject inspector"):
        off.guard_individual("subject inspector")


# -- verdicts over a set of groups: the one place the rule is written ------------------------------
def test_verdicts_hide_small_groups_and_small_complements() -> None:
    policy = PrivacyPolicy(min_group_size=10)
    n = 100
    assert policy.verdicts(GroupSet(n, np.arange(50), "rest", policy=policy)) == {}
    small = policy.verdicts(GroupSet(n, np.arange(5), "rest", policy=policy))
    assert small["selection"].startswith("selection: fewer than 10 subjects (5)")
    assert "reveal the 5 subjects left out" in small["comparison"]  # the rest minus the cohort = the five
    almost_all = policy.verdicts(GroupSet(n, np.arange(96), "all", policy=policy))
    assert set(almost_all) == {"selection"} and "reveal the 4 subjects left out" in almost_all["selection"]
    assert policy.verdicts(GroupSet(n, np.arange(n), "rest", policy=policy)) == {}  # an empty rest is empty
    saved = policy.verdicts(GroupSet(n, np.arange(50), "tiny", np.arange(3), policy=policy))
    assert set(saved) == {"comparison"} and "comparison group: fewer than 10 subjects (3)" in saved["comparison"]


def test_a_further_check_plugs_in_after_the_floor() -> None:
    class SymmetricDifferenceGuard:
        """A stand-in for a session's disclosure guard: refuses groups differing from one shown by a few subjects."""

        def __init__(self) -> None:
            self.shown: list[np.ndarray] = []

        def __call__(self, groups: GroupSet, label: str, policy: PrivacyPolicy) -> str | None:
            mask = groups.mask(label)
            for earlier in self.shown:
                differ = int(np.count_nonzero(mask ^ earlier))
                if 0 < differ < policy.min_group_size:
                    return f"{groups.describe(label)}: differs from a group already shown by {differ} subjects"
            self.shown.append(mask)
            return None

    guard = SymmetricDifferenceGuard()
    policy = PrivacyPolicy(min_group_size=10, checks=(guard,))
    first = GroupSet(200, np.arange(50), "all", policy=policy)
    assert first.hidden == {}
    second = GroupSet(200, np.arange(53), "all", policy=policy)
    assert set(second.hidden) == {"selection"} and "by 3 subjects" in second.hidden["selection"]
    # The floor decides first: a group it hides never reaches the guard.
    assert "fewer than 10" in GroupSet(200, np.arange(4), "all", policy=policy).hidden["selection"]
