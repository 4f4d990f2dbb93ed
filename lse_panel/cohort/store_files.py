"""Durable files for the subgroup store: fsync'd atomic replaces, a backup generation, stale temporaries removed."""

from __future__ import annotations

import errno
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Mapping

import numpy as np

from lse_panel.cohort.rules import SubgroupError

__all__ = [
    "BACKUP_SUFFIX", "TEMP_SUFFIX", "backup_path", "durable_replace", "durable_save_npy", "durable_write_bytes",
    "named_files", "parse_listing", "read_listing", "remove_stale_temporaries", "write_listing",
]

TEMP_SUFFIX = ".tmp"


def _fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (POSIX: fsync of the directory itself)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(path: Path, write: Callable[[BinaryIO], None], *, what: str = "the saved subgroups") -> None:
    """Replace ``path`` with what ``write`` writes, so that after a crash or power cut it is the old or the new file.

    The data goes to a temporary file beside ``path``, is flushed and fsync'd, renamed over
    ``path`` (atomic on POSIX), and the directory is fsync'd so the rename itself survives. On any
    ``OSError`` (a full disk, a read-only bundle) the temporary file is removed, ``path`` is left as
    it was, and :class:`SubgroupError` says what happened and what to do.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        hint = {
            errno.ENOSPC: "the disk is full: free some space",
            errno.EDQUOT: "the disk quota is used up: free some space",
            errno.EROFS: "the bundle is on a read-only file system: copy it somewhere writable",
            errno.EACCES: "this user may not write there: make the bundle directory writable",
        }.get(exc.errno, "check the disk and the bundle directory")
        raise SubgroupError(
            f"could not write {what} ({path.name}: {exc.strerror or exc}); nothing was changed. {hint[0].upper()}"
            f"{hint[1:]}, then try again."
        ) from None


def durable_write_bytes(path: Path, data: bytes, *, what: str = "the saved subgroups") -> None:
    """:func:`durable_replace` with ``data``."""
    durable_replace(path, lambda handle: handle.write(data), what=what)


def durable_save_npy(path: Path, array: np.ndarray, *, what: str = "the subgroup's members") -> None:
    """:func:`durable_replace` with ``array`` as ``.npy`` (no pickles)."""
    durable_replace(path, lambda handle: np.save(handle, np.ascontiguousarray(array), allow_pickle=False), what=what)


def remove_stale_temporaries(directory: Path, prefix: str = "") -> int:
    """Remove the temporary files a killed writer left in ``directory`` (names starting ``.{prefix}``); how many.

    Only safe while holding the store's exclusive lock: then no writer of the store is between
    writing a temporary file and renaming it. ``prefix`` keeps other writers' files (a build's
    manifest) out of reach.
    """
    removed = 0
    if not directory.is_dir():
        return removed
    for file in directory.iterdir():
        if file.name.startswith(f".{prefix}") and file.name.endswith(TEMP_SUFFIX) and file.is_file():
            file.unlink(missing_ok=True)
            removed += 1
    return removed


# -- the listing (subgroups.json) and its backup generation ----------------------------------------
BACKUP_SUFFIX = ".bak"

_MEMBER_FILE = re.compile(r"^subgroups/[A-Za-z0-9._-]+\.npy$")


def backup_path(file: Path) -> Path:
    """Where the previous generation of the listing ``file`` is kept."""
    return file.with_name(file.name + BACKUP_SUFFIX)


def parse_listing(data: bytes, file: Path, version: int) -> dict[str, dict[str, Any]]:
    """The entries of a listing, by name; :class:`SubgroupError` naming the file and field when it is not one."""
    try:
        listing = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SubgroupError(f"{file}: not valid JSON ({exc}).") from None
    if not isinstance(listing, dict) or listing.get("version") != version:
        found = listing.get("version") if isinstance(listing, dict) else None
        raise SubgroupError(
            f"{file}: field 'version' is {found!r}; this lse-panel reads version {version}. Use the lse-panel "
            "version that wrote it."
        )
    entries: dict[str, dict[str, Any]] = {}
    subgroups = listing.get("subgroups", [])
    if not isinstance(subgroups, list):
        raise SubgroupError(f"{file}: field 'subgroups' is not a list.")
    for k, entry in enumerate(subgroups):
        where = f"{file}: subgroups[{k}]"
        if not isinstance(entry, dict):
            raise SubgroupError(f"{where} is not an object.")
        for key, kind in (("name", str), ("colour", str), ("created", str), ("n", int), ("files", dict), ("rule", list)):
            if not isinstance(entry.get(key), kind):
                raise SubgroupError(f"{where}: field {key!r} is missing or not {kind.__name__}.")
        named = [entry["files"].get("ids"), entry["files"].get("rows")]
        named += [step.get("ids_file") for step in entry["rule"] if isinstance(step, dict) and "ids_file" in step]
        for relative in named:
            # Member files live in the bundle's subgroups/ folder: never a path out of it.
            if not isinstance(relative, str) or not _MEMBER_FILE.match(relative) or ".." in relative:
                raise SubgroupError(f"{where}: member file {relative!r} is not a file in the bundle's subgroups/ folder.")
        entries[entry["name"]] = entry
    return entries


def read_listing(file: Path, version: int) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The saved entries and ``None``, or, when ``file`` is unreadable, its backup's entries and a warning.

    Raises
    ------
    SubgroupError
        When neither the file nor its backup can be read (the message names both).
    """
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        data, problem = None, f"{file}: cannot be read ({exc.strerror or exc})."
    if data is not None:
        try:
            return parse_listing(data, file, version), None
        except SubgroupError as exc:
            problem = str(exc)
    backup = backup_path(file)
    try:
        entries = parse_listing(backup.read_bytes(), backup, version)
    except FileNotFoundError:
        raise SubgroupError(f"{problem} There is no backup ({backup.name}). Restore the file, or move it aside to "
                            "start an empty list.") from None  # fmt: skip
    except (OSError, SubgroupError) as exc:
        raise SubgroupError(f"{problem} Its backup is unreadable too ({exc}). Restore the file, or move it aside to "
                            "start an empty list.") from None  # fmt: skip
    warning = (
        f"The saved subgroups file is unreadable ({problem}); showing the previous generation from {backup.name}, "
        "which may miss the latest change. Saving any change rewrites the file from it."
    )
    return entries, warning


def write_listing(file: Path, listing: Mapping[str, Any], version: int) -> None:
    """Replace the listing durably, keeping the current one (when readable) as the backup generation."""
    try:
        current = file.read_bytes()
        parse_listing(current, file, version)
    except (OSError, SubgroupError):
        current = None  # missing or unreadable: the backup already holds the last good generation
    if current is not None:
        durable_write_bytes(backup_path(file), current)
    durable_write_bytes(file, json.dumps(listing, indent=1).encode())


def named_files(entries: Iterable[Mapping[str, Any]]) -> set[str]:
    """The member files (relative to the bundle) ``entries`` name."""
    named: set[str] = set()
    for entry in entries:
        named.update(entry["files"].values())
        named.update(step["ids_file"] for step in entry["rule"] if "ids_file" in step)
    return named
