"""The subgroup manager over a store under stress: paged lists, a broken listing, a full disk, other people's subgroups."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from lse_panel.cohort.bundle import open_bundle
from lse_panel.cohort.subgroups import STORE_FILE
from lse_panel.components.state import ExplorerState
from lse_panel.components.subgroups import SubgroupManager
from lse_panel.testing import tiny_cohort, write_cohort_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write_cohort_bundle(tiny_cohort(500), tmp_path / "bundle")


def _manager(bundle: Path) -> SubgroupManager:
    return SubgroupManager(ExplorerState(open_bundle(bundle)))


def test_the_list_is_paged_and_searchable(bundle: Path) -> None:
    from lse_panel.components.subgroups import PAGE_SIZE

    manager = _manager(bundle)
    for k in range(2 * PAGE_SIZE + 3):
        manager.state.select(np.arange(k, k + 20))
        manager.save_selection(f"group {k:02d}")
    assert len(manager._rows) == PAGE_SIZE
    assert manager._page_text.object == f"page 1 of 3 ({2 * PAGE_SIZE + 3} subgroups)"
    manager._turn(+1)
    manager._turn(+1)
    assert list(manager._rows) == [f"group {k:02d}" for k in range(2 * PAGE_SIZE, 2 * PAGE_SIZE + 3)]
    assert manager._next.disabled and not manager._previous.disabled
    manager.find = "GROUP 1"
    assert manager.page == 0
    assert set(manager._rows) == {f"group {k:02d}" for k in range(10, 20)}
    manager.find = "nothing like it"
    assert manager._rows == {} and "No saved subgroup matches" in manager._list.objects[0].object


def test_an_unreadable_listing_shows_a_warning_and_the_backup(bundle: Path) -> None:
    manager = _manager(bundle)
    manager.state.select(np.arange(30))
    manager.save_selection("first")
    manager.save_selection("second")
    (bundle / STORE_FILE).write_bytes(b"")
    fresh = _manager(bundle)
    assert fresh.names == ["first"]
    assert fresh._warning.visible and "previous generation" in fresh._warning.object


def test_a_full_disk_is_reported_in_the_pane_with_nothing_left_behind(bundle: Path, monkeypatch) -> None:
    manager = _manager(bundle)
    manager.state.select(np.arange(30))
    manager._name.value = "kept"
    manager._on_save(None)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    manager._name.value = "lost"
    manager._on_save(None)  # raises nothing into the page
    monkeypatch.undo()
    assert manager._status.alert_type == "danger"
    assert "No space left on device" in manager.message and "disk is full" in manager.message.lower()
    assert not list(bundle.rglob("*.tmp"))
    assert _manager(bundle).names == ["kept"]


def test_only_the_owner_changes_a_subgroup(bundle: Path) -> None:
    alice, mallory = _manager(bundle), _manager(bundle)
    alice.user, mallory.user = "alice", "mallory"
    alice.state.select(np.arange(30))
    alice.save_selection("alice's")
    mallory.refresh()
    mallory._on_delete("alice's", None)
    assert "belongs to 'alice'" in mallory.message
    mallory._rows["alice's"].rename.value = "taken"
    assert "belongs to 'alice'" in mallory.message
    assert mallory._rows["alice's"].rename.value == "alice's"
    assert _manager(bundle).names == ["alice's"]
    alice._on_delete("alice's", None)
    assert _manager(bundle).names == []
