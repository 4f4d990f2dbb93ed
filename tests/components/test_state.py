"""The session state derives the groups once per change; a saved-subgroup comparison reads the store once."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.groups import COMPARISON, SELECTION
from lse_panel.cohort.bundle import open_bundle
from lse_panel.cohort.subgroups import SubgroupStore
from lse_panel.components.state import ExplorerState
from lse_panel.testing import tiny_cohort, write_cohort_bundle


@pytest.fixture
def bundle(tmp_path):
    return write_cohort_bundle(tiny_cohort(500), tmp_path / "bundle")


def test_one_groupset_per_selection_change() -> None:
    state = ExplorerState(tiny_cohort(300))
    seen = []
    state.param.watch(lambda event: seen.append(event.new), "groups")
    state.select(np.arange(40))
    assert len(seen) == 1 and seen[0] is state.groups
    np.testing.assert_array_equal(state.groups.selection, np.arange(40))
    assert state.groups.sizes == {SELECTION: 40, COMPARISON: 260}
    state.comparison = "all"
    assert len(seen) == 2 and state.groups.size(COMPARISON) == 300
    np.testing.assert_array_equal(state.comparison_indices(), np.arange(300))


def test_a_subgroup_comparison_reads_the_store_once_per_change(bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SubgroupStore(open_bundle(bundle))
    state = ExplorerState(store.cohort, store=store)
    assert state.store is store
    store.save("older", np.arange(100, 300))
    state.refresh_subgroups()
    state.comparison = "older"
    reads = []
    real_read = store._read
    monkeypatch.setattr(store, "_read", lambda: reads.append(1) or real_read())
    for k in range(5):
        state.select(np.arange(k, 50 + k))
        np.testing.assert_array_equal(state.groups.rows(COMPARISON), np.arange(100, 300))
    assert reads == []  # the members come from memory while subgroups.json is unchanged
    # Another session (another store on the same bundle) saves it again: the state follows.
    SubgroupStore(open_bundle(bundle)).save("older", np.arange(200, 220), overwrite=True)
    state.refresh_subgroups()
    assert reads == [1] and state.groups.size(COMPARISON) == 20
    SubgroupStore(open_bundle(bundle)).delete("older")
    state.refresh_subgroups()
    assert state.comparison == "rest" and "older" not in state.param.comparison.objects
