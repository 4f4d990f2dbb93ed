"""Named subgroups saved in the bundle: their members (by subject id) and the rule that made them.

The rule language lives in :mod:`lse_panel.cohort.rules`, the id → row lookup in
:mod:`lse_panel.cohort.ids`; this module is the store: save, list, rename, recolour, delete, export.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Hashable, Iterator, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from lse_panel.analysis.selection import sorted_unique
from lse_panel.cohort.bundle import Cohort, atomic_write_table
from lse_panel.cohort.ids import locate_ids
from lse_panel.cohort.names import name_key, stored_colour, validate_colour, validate_name
from lse_panel.cohort.store_limits import check_owner, check_room, check_rule_size
from lse_panel.cohort.store_files import durable_save_npy, named_files, read_listing, remove_stale_temporaries
from lse_panel.cohort.store_files import write_listing
from lse_panel.cohort.rules import (
    FilterStep,
    IdsStep,
    Rule,
    Step,
    SubgroupError,
    UnknownSubgroupError,
    apply_rule,
    labelled_rule,
    rule_from_json,
)
from lse_panel.palette import next_free_colour

if TYPE_CHECKING:
    from lse_panel.analysis.privacy import PrivacyPolicy

try:  # POSIX only; elsewhere concurrent writers from several processes are not coordinated.
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

__all__ = ["Subgroup", "SubgroupStore", "validate_colour", "validate_name"]

STORE_FILE = "subgroups.json"
MEMBER_DIR = "subgroups"
LOCK_FILE = ".subgroups.lock"
STORE_VERSION = 1

INLINE_IDS = 1_000
"""An ``ids`` step with more ids than this keeps them in a ``.npy`` beside ``subgroups.json``,
so the JSON stays small enough to read on every listing."""

@dataclass(frozen=True, eq=False)
class Subgroup:
    """A saved subgroup: its members and the rule that made them.

    Attributes
    ----------
    name
        Unique within the bundle, at most 80 characters.
    colour
        ``#rrggbb``.
    ids
        Member subject ids (the authority on membership), in the order of ``rows``.
    rows
        Row indices of the members in the bundle as it was when the subgroup was saved.
    rule
        The steps that made the selection; :func:`apply_rule` re-runs them.
    created
        When it was saved, ISO 8601 with the UTC offset.
    owner
        The user who saved it (the server's login), who alone may rename, recolour or delete it;
        ``None`` when saved without a login: anyone may.
    """

    name: str
    colour: str
    ids: np.ndarray
    rows: np.ndarray
    rule: Rule
    created: str
    owner: str | None = None

    @property
    def n(self) -> int:
        """Number of members."""
        return int(self.ids.shape[0])

    def summary(self) -> dict[str, Any]:
        """Small JSON-ready description (no member arrays), for lists and tables."""
        return {"name": self.name, "colour": self.colour, "n": self.n, "created": self.created,
                "steps": len(self.rule), "owner": self.owner}  # fmt: skip


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return slug or "subgroup"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class SubgroupStore:
    """The subgroups saved with one cohort: save, list, rename, recolour, delete, export.

    On a bundle, subgroups live in ``subgroups.json`` (names, colours, rules, file names) plus
    two ``.npy`` files per subgroup under ``subgroups/`` (member ids and row indices), so the JSON
    stays small however large a subgroup is. Every change writes the member files under fresh
    names first and then replaces ``subgroups.json`` atomically (temporary file, ``os.replace``):
    a crash leaves the previous list intact, and files no list names are removed by the next
    change. Changes from several ``panel serve`` processes are serialised by a lock file, and
    every read first checks the file's identity (:meth:`version`, one ``stat``) and re-reads it
    when it changed, so a subgroup saved in one session shows up in all of them while a pane
    asking for the same members on every selection never waits on the lock.

    For a cohort without a path (built in memory), subgroups are kept in memory, shared by every
    store on that cohort object, and lost with it.

    Parameters
    ----------
    cohort
        The cohort whose row indices ``save`` takes and ``members`` returns.
    """

    _memory: ClassVar[weakref.WeakKeyDictionary[Cohort, dict[str, dict[str, Any]]]] = weakref.WeakKeyDictionary()
    _memory_versions: ClassVar[weakref.WeakKeyDictionary[Cohort, int]] = weakref.WeakKeyDictionary()
    _thread_lock: ClassVar[threading.RLock] = threading.RLock()
    """Serialises changes between sessions (threads) of one process; the file lock covers processes."""

    def __init__(self, cohort: Cohort) -> None:
        self.cohort = cohort
        self.path = Path(cohort.path) if cohort.path is not None else None
        self._cache_version: Hashable = object()  # matches no version: the first read goes to disk
        self._cache_entries: dict[str, dict[str, Any]] | None = None
        self._cache_members: dict[tuple[str | None, str], np.ndarray] = {}
        self._cache_loaded: dict[str, Subgroup] = {}
        self.warning: str | None = None
        """Set when the listing was unreadable and its backup generation is shown (for the page to say)."""

    # -- reading ------------------------------------------------------------------------
    def version(self) -> Hashable:
        """Changes whenever the saved subgroups change (here or in another process); one ``stat``.

        On a bundle, the identity of ``subgroups.json`` (inode, modification time, size): every
        change replaces the file atomically, so a new version is a new file. In memory, a counter.
        """
        if self.path is None:
            return self._memory_versions.get(self.cohort, 0)
        try:
            st = os.stat(self.path / STORE_FILE)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _entries(self) -> dict[str, dict[str, Any]]:
        """The saved entries, read (under the shared lock) only when :meth:`version` has changed."""
        version = self.version()
        if self._cache_version != version or self._cache_entries is None:
            with self._lock(exclusive=False):
                entries = self._read()
            self._cache_version, self._cache_entries, self._cache_members = version, entries, {}
            self._cache_loaded = {}
        return self._cache_entries

    def _loaded(self, key: str) -> Subgroup:
        """Subgroup ``key`` (an exact saved name) with its member arrays opened, once per version."""
        entries = self._entries()
        found = self._cache_loaded.get(key)
        if found is None:
            found = self._cache_loaded[key] = self._load(entries[key])
        return found

    def list(self) -> list[Subgroup]:
        """Every saved subgroup, oldest first."""
        return [self._loaded(key) for key in self._entries()]

    def names(self) -> list[str]:
        """Names of the saved subgroups, oldest first."""
        return list(self._entries())

    def summaries(self) -> list[dict[str, Any]]:
        """:meth:`Subgroup.summary` of every saved subgroup, oldest first, read from the listing alone (no member files)."""
        return [{"name": e["name"], "colour": stored_colour(e.get("colour")), "n": int(e["n"]), "created": e["created"],
                 "steps": len(e["rule"]), "owner": e.get("owner")} for e in self._entries().values()]  # fmt: skip

    def get(self, name: str) -> Subgroup:
        """The subgroup called ``name``; :class:`UnknownSubgroupError` listing the names if none."""
        return self._loaded(self._entry_key(self._entries(), name))

    def __contains__(self, name: object) -> bool:
        # Case-insensitive, like every other lookup: names are unique ignoring case.
        return isinstance(name, str) and self._find(self._entries(), name) is not None

    def __len__(self) -> int:
        return len(self.names())

    def __iter__(self) -> Iterator[Subgroup]:
        return iter(self.list())

    def members(
        self, name: str, *, cohort: Cohort | None = None, missing: Literal["drop", "raise"] = "drop"
    ) -> np.ndarray:
        """Row indices, in ``cohort`` (default: this store's), of the subjects saved in ``name``.

        Membership is looked up by subject id, so a bundle rebuilt with the same subjects in
        another order, or re-embedded with a new model, still gives the same subjects: this is
        "where are those subjects now". To see where the subgroup's *rule* (its lasso, filters)
        lands on the new data instead, use :meth:`reapply`.

        Parameters
        ----------
        name
            A saved subgroup.
        cohort
            Where to look the ids up; defaults to the store's cohort.
        missing
            ``"drop"`` ignores saved subjects the cohort no longer has; ``"raise"`` raises
            :class:`SubgroupError` naming some of them.

        Returns
        -------
        numpy.ndarray
            Sorted, unique int64 row indices, read-only: for this store's cohort they are kept in
            memory until the saved subgroups change, so a pane asking on every selection costs a
            ``stat``, not a read of the store under its lock.
        """
        if cohort is None or cohort is self.cohort:
            entries = self._entries()
            key = (self._find(entries, name), missing)
            cached = self._cache_members.get(key)
            if cached is None:
                cached = self._members(name, self.cohort, missing)
                cached.flags.writeable = False
                self._cache_members[key] = cached
            return cached
        return self._members(name, cohort, missing)

    def _members(self, name: str, target: Cohort, missing: Literal["drop", "raise"]) -> np.ndarray:
        group = self.get(name)
        indices, absent = locate_ids(target, group.ids, saved_rows=np.asarray(group.rows, dtype=np.int64))
        if absent.size and missing == "raise":
            raise SubgroupError(
                f"subgroup {group.name!r}: {absent.size} of its {group.n} subjects are not in this cohort "
                f"(e.g. {absent[:5].tolist()}). Pass missing='drop' to use the others."
            )
        return indices

    def reapply(self, name: str, *, cohort: Cohort | None = None) -> np.ndarray:
        """Re-run the saved rule of ``name`` on ``cohort`` (default: this store's); see :func:`apply_rule`."""
        return apply_rule(self.get(name).rule, cohort if cohort is not None else self.cohort)

    # -- changing -----------------------------------------------------------------------
    def save(
        self,
        name: str,
        indices: np.ndarray,
        rule: Sequence[Step | Mapping[str, Any]] = (),
        colour: str | None = None,
        *,
        overwrite: bool = False,
        owner: str | None = None,
    ) -> Subgroup:
        """Save the subjects at ``indices`` as subgroup ``name``, with the rule that selected them.

        Parameters
        ----------
        name
            Non-empty, at most 80 characters, no path separators, unique (ignoring case).
        indices
            Row indices of this store's cohort (a selection), or a boolean mask.
        rule
            The steps that made the selection (:class:`BoxStep`, :class:`LassoStep`,
            :class:`FilterStep`, :class:`IdsStep`, or their JSON dicts). Category codes in range
            filters are stored as labels.
        colour
            ``#rrggbb``; by default the first palette colour no other subgroup uses.
        overwrite
            Replace an existing subgroup of that name (keeping its colour unless one is given);
            only its owner may.
        owner
            The logged-in user saving it (see :attr:`Subgroup.owner`).

        Returns
        -------
        Subgroup
            As saved.
        """
        name = validate_name(name)
        rows = self._indices(indices)
        steps = labelled_rule(rule_from_json(list(rule)), self.cohort)
        check_rule_size(name, steps, inline_ids=INLINE_IDS)
        ids = np.asarray(self.cohort.ids[rows])
        with self._lock(exclusive=True):
            entries = self._read()
            existing = self._find(entries, name)
            if existing is not None and not overwrite:
                raise SubgroupError(
                    f"a subgroup called {existing!r} already exists; choose another name, rename or delete "
                    "it first, or pass overwrite=True."
                )
            if existing is not None:
                check_owner(entries[existing], owner, "overwrite")
            else:
                check_room(len(entries))
            old = entries.pop(existing) if existing is not None else None
            if colour is not None:
                colour = validate_colour(colour)
            elif old is not None:
                colour = old["colour"]
            else:
                colour = next_free_colour([e["colour"] for e in entries.values()])
            entry = self._write_members(name, ids, rows, steps)
            entry.update(name=name, colour=colour, created=_now(), owner=owner)
            entries[name] = entry
            self._commit(entries)
            return self._load(entry)

    def save_condition(
        self, name: str, text: str, *, colour: str | None = None, overwrite: bool = False, owner: str | None = None,
        rows_of: Callable[[list[Step]], np.ndarray] | None = None,
    ) -> Subgroup:
        """Save the subjects matching a condition (e.g. ``'age >= 60 and sex == "female"'``) as ``name``.

        The condition is parsed by :func:`lse_panel.analysis.conditions.parse_condition` (never
        evaluated as Python) and stored as the subgroup's rule. ``rows_of`` finds the rule's rows
        (default :func:`~lse_panel.cohort.rules.apply_rule` here; a session passes its backend's).

        Raises
        ------
        ConditionError
            When the condition does not parse or does not fit the cohort's phenotypes.
        """
        step = FilterStep.from_text(text, self.cohort)
        rows = rows_of([step]) if rows_of is not None else apply_rule([step], self.cohort)
        return self.save(name, rows, [step], colour, overwrite=overwrite, owner=owner)

    def rename(self, old: str, new: str, *, user: str | None = None) -> Subgroup:
        """Rename subgroup ``old`` to ``new`` (validated like a new name); only its owner (``user``) may."""
        new = validate_name(new)
        with self._lock(exclusive=True):
            entries = self._read()
            current = self._find(entries, old)
            if current is None:
                raise self._unknown(entries, old)
            check_owner(entries[current], user, "rename")
            clash = self._find(entries, new)
            if clash is not None and clash != current:
                raise SubgroupError(
                    f"cannot rename {current!r} to {new!r}: a subgroup called {clash!r} already exists."
                )
            # Rebuild the dict to keep the subgroup in its place in the list.
            entries = {
                (new if key == current else key): ({**entry, "name": new} if key == current else entry)
                for key, entry in entries.items()
            }
            self._commit(entries)
            return self._load(entries[new])

    def recolour(self, name: str, colour: str, *, user: str | None = None) -> Subgroup:
        """Give subgroup ``name`` the colour ``colour`` (``#rrggbb`` or ``#rgb``); only its owner (``user``) may."""
        colour = validate_colour(colour)
        with self._lock(exclusive=True):
            entries = self._read()
            key = self._entry_key(entries, name)
            check_owner(entries[key], user, "recolour")
            entries[key] = {**entries[key], "colour": colour}
            self._commit(entries)
            return self._load(entries[key])

    def delete(self, name: str, *, user: str | None = None) -> None:
        """Delete subgroup ``name`` and its member files; only its owner (``user``) may."""
        with self._lock(exclusive=True):
            entries = self._read()
            key = self._entry_key(entries, name)
            check_owner(entries[key], user, "delete")
            del entries[key]
            self._commit(entries)

    def export(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        phenotypes: Sequence[str] | None = None,
        policy: PrivacyPolicy | None = None,
    ) -> Path:
        """Write a subgroup's subject ids and phenotypes to ``.csv`` or ``.parquet``.

        Parameters
        ----------
        name
            A saved subgroup.
        path
            Destination; the format follows the suffix (``.csv``, ``.parquet``/``.pq``).
        phenotypes
            Columns after ``id``; by default every phenotype. Categories are written as labels,
            missing values as empty cells (CSV) or nulls (Parquet).
        policy
            Exporting ids is an individual-level view: a policy with ``individual_views=False``
            refuses with ``PrivacyError``.

        Returns
        -------
        pathlib.Path
            The written file (replaced atomically if it existed).
        """
        if policy is not None:
            policy.guard_individual(f"export of subgroup {name!r}")
        path = Path(path)
        if path.suffix.lower() not in (".csv", ".parquet", ".pq"):
            raise SubgroupError(f"cannot export to {path.name!r}: use a .csv or .parquet file name.")
        atomic_write_table(path, self.table(name, phenotypes=phenotypes))
        return path

    def table(self, name: str, *, phenotypes: Sequence[str] | None = None) -> pd.DataFrame:
        """A subgroup's members as a DataFrame: ``id`` then phenotype columns (categories as labels)."""
        rows = self.members(name)
        names = list(self.cohort.phenotype_specs) if phenotypes is None else list(phenotypes)
        columns: dict[str, Any] = {"id": np.asarray(self.cohort.ids[rows])}
        for pheno in names:
            spec = self.cohort.phenotype_specs.get(pheno)
            if spec is None:
                available = ", ".join(self.cohort.phenotype_specs)
                raise SubgroupError(f"no phenotype {pheno!r}; this cohort has {available}.")
            values = np.asarray(self.cohort.phenotype(pheno))[rows]
            if spec.type == "continuous":
                columns[pheno] = values
            else:
                labels = np.asarray(spec.categories, dtype=object)
                columns[pheno] = pd.array(np.where(values >= 0, labels[np.clip(values, 0, None)], None), dtype="string")
        return pd.DataFrame(columns)

    # -- internals ----------------------------------------------------------------------
    def _indices(self, indices: np.ndarray) -> np.ndarray:
        a = np.asarray(indices)
        n = self.cohort.n_subjects
        if a.dtype == np.bool_:
            if a.shape != (n,):
                raise SubgroupError(f"a mask must have one entry per subject ({n}); got shape {a.shape}.")
            return np.flatnonzero(a).astype(np.int64)
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise SubgroupError(f"indices must be a 1-D array of row numbers; got dtype {a.dtype}, shape {a.shape}.")
        a = sorted_unique(a)
        if a.size and (a[0] < 0 or a[-1] >= n):
            raise SubgroupError(f"indices must lie in 0..{n - 1}; got {a[0]}..{a[-1]}.")
        return a

    @staticmethod
    def _find(entries: Mapping[str, Any], name: str) -> str | None:
        # Names are unique ignoring case, so "LVH" and "lvh" never sit side by side in a list.
        if not isinstance(name, str):
            return None
        wanted = name_key(name)
        return next((key for key in entries if name_key(key) == wanted), None)

    def _entry_key(self, entries: Mapping[str, Any], name: str) -> str:
        key = self._find(entries, name)
        if key is None:
            raise self._unknown(entries, name)
        return key

    @staticmethod
    def _unknown(entries: Mapping[str, Any], name: str) -> UnknownSubgroupError:
        saved = ", ".join(map(repr, entries)) or "none yet"
        return UnknownSubgroupError(f"no subgroup called {name!r}; saved subgroups: {saved}.")

    @contextlib.contextmanager
    def _lock(self, *, exclusive: bool) -> Iterator[None]:
        if not exclusive:
            with self._file_lock(exclusive=False):
                yield
            return
        with self._thread_lock, self._file_lock(exclusive=True):
            yield

    @contextlib.contextmanager
    def _file_lock(self, *, exclusive: bool) -> Iterator[None]:
        if self.path is None or fcntl is None:
            yield
            return
        lock_path = self.path / LOCK_FILE
        try:
            handle = open(lock_path, "a+")
        except OSError as exc:
            if not exclusive:
                # A read-only bundle can still be read; nobody can be writing to it.
                yield
                return
            raise SubgroupError(
                f"{self.path}: cannot save subgroups here ({exc.strerror}). Make the bundle directory "
                "writable, or copy the bundle somewhere writable."
            ) from None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.path is None:
            return dict(self._memory.setdefault(self.cohort, {}))
        entries, self.warning = read_listing(self.path / STORE_FILE, STORE_VERSION)
        return entries

    def _load(self, entry: Mapping[str, Any]) -> Subgroup:
        if self.path is None:
            ids, rows, rule = entry["ids"], entry["rows"], entry["rule"]
        else:
            ids = self._load_array(entry["files"]["ids"])
            rows = self._load_array(entry["files"]["rows"])
            rule = rule_from_json([self._expand_step(step) for step in entry["rule"]])
        owner = entry.get("owner")
        colour = stored_colour(entry.get("colour"))
        return Subgroup(entry["name"], colour, ids, rows, tuple(rule), entry["created"], owner if isinstance(owner, str) else None)

    def _load_array(self, relative: str) -> np.ndarray:
        assert self.path is not None
        file = self.path / relative
        try:
            # Large ones memory-mapped (a listing reads only their headers); small ones read, as each
            # map holds a file descriptor and 10,000 subgroups would exhaust the process's 1,024.
            big = file.stat().st_size > 1 << 20
            return np.load(file, mmap_mode="r" if big else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SubgroupError(
                f"{file}: named by {STORE_FILE} but unreadable ({exc}). Delete that subgroup and save it again."
            ) from None

    def _expand_step(self, step: Mapping[str, Any]) -> Mapping[str, Any]:
        if "ids_file" in step:
            return {"mode": step["mode"], "ids": self._load_array(step["ids_file"])}
        return step

    def _write_members(self, name: str, ids: np.ndarray, rows: np.ndarray, rule: Rule) -> dict[str, Any]:
        if self.path is None:
            return {"ids": ids, "rows": rows, "rule": rule, "n": int(rows.size)}
        # Fresh file names every time: the files the current list names are never touched, so a
        # crash before the list is replaced leaves the previous state whole.
        stem = f"{MEMBER_DIR}/{_slug(name)}-{uuid.uuid4().hex[:12]}"
        files = {"ids": f"{stem}.ids.npy", "rows": f"{stem}.rows.npy"}
        durable_save_npy(self.path / files["ids"], ids)
        durable_save_npy(self.path / files["rows"], rows)
        steps: list[dict[str, Any]] = []
        for k, step in enumerate(rule):
            data = step.to_json()
            if isinstance(step, IdsStep) and step.ids.size > INLINE_IDS:
                relative = f"{stem}.step{k}.ids.npy"
                durable_save_npy(self.path / relative, step.ids)
                data = {"mode": step.mode, "ids_file": relative}
            steps.append(data)
        return {"n": int(rows.size), "files": files, "rule": steps}

    def _commit(self, entries: dict[str, dict[str, Any]]) -> None:
        if self.path is None:
            self._memory[self.cohort] = entries
            self._memory_versions[self.cohort] = self._memory_versions.get(self.cohort, 0) + 1
            return
        listing = []
        for entry in entries.values():
            ordered = {k: entry[k] for k in ("name", "colour", "created", "n", "files", "rule")}
            if entry.get("owner"):
                ordered["owner"] = entry["owner"]
            listing.append(ordered)
        write_listing(self.path / STORE_FILE, {"version": STORE_VERSION, "subgroups": listing}, STORE_VERSION)
        self.warning = None
        self._collect_garbage(entries)

    def _collect_garbage(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Remove member files neither the list nor its backup names, and temporary files killed writers left."""
        assert self.path is not None
        # Safe under the exclusive lock: no other writer is between writing files and the list.
        remove_stale_temporaries(self.path, STORE_FILE)
        directory = self.path / MEMBER_DIR
        if not directory.is_dir():
            return
        remove_stale_temporaries(directory)
        named = named_files(entries.values())
        try:
            # The backup generation stays usable: its member files are kept too.
            named |= named_files(read_listing(self.path / (STORE_FILE + ".bak"), STORE_VERSION)[0].values())
        except SubgroupError:
            pass
        for file in directory.iterdir():
            if f"{MEMBER_DIR}/{file.name}" not in named and file.is_file():
                file.unlink(missing_ok=True)

