"""The subgroup store survives what disks and people do: a broken listing, a full disk, crashes, strangers, huge rules."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from lse_panel.cohort.bundle import open_bundle
from lse_panel.cohort.rules import IdsStep, LassoStep, SubgroupError
from lse_panel.cohort.subgroups import STORE_FILE, SubgroupStore
from lse_panel.testing import tiny_cohort, write_cohort_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write_cohort_bundle(tiny_cohort(400), tmp_path / "bundle")


def _store(bundle: Path) -> SubgroupStore:
    return SubgroupStore(open_bundle(bundle))


@pytest.mark.parametrize(
    "damage",
    [b"", b"{", b"\x00" * 64, b'{"version": 1, "subgroups": "many"}', b'{"version": 99}', b"[]",
     b'{"version": 1, "subgroups": [{"name": "x"}]}',
     b'{"version": 1, "subgroups": [{"name": "x", "colour": "#000000", "created": "", "n": 1, '
     b'"files": {"ids": "../../../etc/passwd", "rows": "subgroups/a.npy"}, "rule": []}]}'],
    ids=["empty", "truncated", "zeros", "subgroups-not-list", "version", "array", "entry-missing-fields", "path-escape"],
)
def test_an_unreadable_listing_falls_back_to_the_backup_with_a_warning(bundle: Path, damage: bytes) -> None:
    store = _store(bundle)
    store.save("first", [1, 2, 3])
    store.save("second", [4, 5])  # the backup generation now holds "first"
    (bundle / STORE_FILE).write_bytes(damage)
    fresh = _store(bundle)
    assert fresh.names() == ["first"]
    np.testing.assert_array_equal(fresh.members("first"), [1, 2, 3])
    assert "unreadable" in fresh.warning and "previous generation" in fresh.warning
    # A change rewrites the listing from the backup; the warning goes.
    fresh.save("third", [7])
    assert fresh.warning is None
    assert _store(bundle).names() == ["first", "third"]


def test_no_readable_generation_is_a_clear_error(bundle: Path) -> None:
    store = _store(bundle)
    store.save("only", [1])
    (bundle / STORE_FILE).write_bytes(b"")
    with pytest.raises(SubgroupError, match="no backup"):
        _store(bundle).names()
    (bundle / (STORE_FILE + ".bak")).write_bytes(b"garbage")
    with pytest.raises(SubgroupError, match="backup is unreadable too"):
        _store(bundle).names()


def test_files_and_directory_are_fsynced_around_each_replace(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    _store(bundle).save("durable", [1, 2])
    names = [Path(p).name for p in synced]
    assert any(n.startswith(f".{STORE_FILE}.") for n in names)  # the listing's temporary file, before the rename
    assert str(bundle) in synced  # the directory, after the rename
    assert str(bundle / "subgroups") in synced
    assert any(n.endswith(".ids.npy.tmp") or ".ids.npy." in n for n in names)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO])
def test_a_failing_disk_changes_nothing_and_leaves_no_temporary_file(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    store = _store(bundle)
    store.save("kept", [1, 2, 3])
    before = (bundle / STORE_FILE).read_bytes()
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(SubgroupError, match="nothing was changed"):
        store.save("lost", [4, 5])
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (bundle / STORE_FILE).read_bytes() == before
    assert not list(bundle.rglob("*.tmp"))
    assert _store(bundle).names() == ["kept"]


def test_stale_temporary_files_are_removed_by_the_next_change(bundle: Path) -> None:
    store = _store(bundle)
    store.save("a", [1])
    stale = [bundle / f".{STORE_FILE}.dead.tmp", bundle / "subgroups" / ".a-1.ids.npy.dead.tmp"]
    other = bundle / ".manifest.json.building.tmp"  # another writer's: not the store's to remove
    for file in (*stale, other):
        file.write_bytes(b"half")
    store.save("b", [2])
    assert not any(file.exists() for file in stale)
    assert other.exists()


def test_count_is_capped(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lse_panel.cohort import store_limits

    monkeypatch.setattr(store_limits, "MAX_SUBGROUPS", 3)
    store = _store(bundle)
    for k in range(3):
        store.save(f"g{k}", [k])
    with pytest.raises(SubgroupError, match="already keeps 3 subgroups, the most it holds"):
        store.save("one too many", [9])
    store.save("g0", [5], overwrite=True)  # replacing one needs no room
    assert store.names() == ["g1", "g2", "g0"]


def test_rules_are_capped(bundle: Path) -> None:
    store = _store(bundle)
    theta = np.linspace(0, 2 * np.pi, 100_000)
    huge = LassoStep("fused/umap", tuple(np.cos(theta) * 5), tuple(np.sin(theta) * 5))
    with pytest.raises(SubgroupError, match="kB as JSON; at most 256 kB"):
        store.save("huge lasso", [1, 2], [huge])
    many = [IdsStep(np.array([store.cohort.ids[1]]), "add")] * 101
    with pytest.raises(SubgroupError, match="101 steps; at most 100"):
        store.save("many steps", [1], many)
    # A million ids is no problem: they go to a file beside the listing.
    store.save("by ids", np.arange(400), [IdsStep(np.asarray(store.cohort.ids))])
    assert store.names() == ["by ids"]


def test_only_the_owner_renames_recolours_deletes_or_overwrites(bundle: Path) -> None:
    store = _store(bundle)
    store.save("alice's", [1, 2], owner="alice")
    store.save("shared", [3])  # saved without a login: anyone may change it
    for action in (
        lambda: store.rename("alice's", "mine now", user="mallory"),
        lambda: store.recolour("alice's", "#000000", user="mallory"),
        lambda: store.delete("alice's", user="mallory"),
        lambda: store.delete("alice's"),  # nobody logged in
        lambda: store.save("alice's", [9], overwrite=True, owner="mallory"),
    ):
        with pytest.raises(SubgroupError, match="belongs to 'alice'"):
            action()
    assert _store(bundle).get("alice's").n == 2
    assert _store(bundle).get("alice's").owner == "alice"
    store.rename("alice's", "alice renamed", user="alice")
    store.delete("shared", user="mallory")
    store.delete("alice renamed", user="alice")
    assert _store(bundle).names() == []
