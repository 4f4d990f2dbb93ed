"""Named subgroups saved in the bundle: their members (by subject id) and the rule that made them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Literal, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from lse_panel.cohort.bundle import Cohort, atomic_save_npy, atomic_write_json

if TYPE_CHECKING:
    from lse_panel.analysis.privacy import PrivacyPolicy

try:  # POSIX only; elsewhere concurrent writers from several processes are not coordinated.
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BoxStep",
    "FilterStep",
    "IdsStep",
    "LassoStep",
    "Rule",
    "Step",
    "Subgroup",
    "SubgroupError",
    "SubgroupStore",
    "UnknownSubgroupError",
    "apply_rule",
    "ids_to_indices",
    "rule_from_json",
    "rule_to_json",
    "validate_colour",
    "validate_name",
]

SelectionMode = Literal["new", "add", "intersect", "subtract"]
MODES: tuple[str, ...] = ("new", "add", "intersect", "subtract")

STORE_FILE = "subgroups.json"
MEMBER_DIR = "subgroups"
LOCK_FILE = ".subgroups.lock"
STORE_VERSION = 1

MAX_NAME_LENGTH = 80

INLINE_IDS = 1_000
"""An ``ids`` step with more ids than this keeps them in a ``.npy`` beside ``subgroups.json``,
so the JSON stays small enough to read on every listing."""

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
"""Default colours (Category10), handed out in order, skipping those already in use."""

_HEX = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


class SubgroupError(ValueError):
    """A subgroup operation that cannot be done; the message says why and what to do instead."""


class UnknownSubgroupError(SubgroupError, KeyError):
    """No subgroup of that name (a ``KeyError`` too, so ``except KeyError`` also catches it)."""

    def __str__(self) -> str:
        # KeyError would show the repr of the message; this one reads as a sentence.
        return str(self.args[0]) if self.args else ""


# ----------------------------------------------------------------------------- rules


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise SubgroupError(f"selection mode {mode!r} is not one of {', '.join(map(repr, MODES))}.")


def _check_projection(projection: str) -> None:
    if not isinstance(projection, str) or projection.count("/") != 1 or "" in projection.split("/"):
        raise SubgroupError(
            f"projection {projection!r} must be written '<latent kind>/<method>', e.g. 'fused/umap'."
        )


@dataclass(frozen=True)
class BoxStep:
    """Subjects inside an axis-aligned box drawn on a projection.

    Parameters
    ----------
    projection
        ``"<latent kind>/<method>"``, e.g. ``"fused/umap"``.
    bounds
        ``(x0, y0, x1, y1)``, as Bokeh's ``BoundsXY`` stream gives them.
    mode
        How this step combines with the selection so far.
    """

    projection: str
    bounds: tuple[float, float, float, float]
    mode: SelectionMode = "new"

    def __post_init__(self) -> None:
        _check_projection(self.projection)
        _check_mode(self.mode)
        bounds = tuple(float(b) for b in self.bounds)
        if len(bounds) != 4 or not all(np.isfinite(bounds)):
            raise SubgroupError(f"box bounds must be four finite numbers (x0, y0, x1, y1); got {self.bounds!r}.")
        object.__setattr__(self, "bounds", bounds)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "projection": self.projection, "box": list(self.bounds)}


@dataclass(frozen=True)
class LassoStep:
    """Subjects inside a lasso polygon drawn on a projection (even–odd rule).

    Parameters
    ----------
    projection
        ``"<latent kind>/<method>"``, e.g. ``"fused/umap"``.
    xs, ys
        The polygon's vertices, as Bokeh's ``Lasso`` stream gives them.
    mode
        How this step combines with the selection so far.
    """

    projection: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    mode: SelectionMode = "new"

    def __post_init__(self) -> None:
        _check_projection(self.projection)
        _check_mode(self.mode)
        xs = tuple(float(v) for v in np.asarray(self.xs, dtype=float).ravel())
        ys = tuple(float(v) for v in np.asarray(self.ys, dtype=float).ravel())
        if len(xs) != len(ys):
            raise SubgroupError(f"lasso has {len(xs)} x and {len(ys)} y coordinates; pass one of each per vertex.")
        if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
            raise SubgroupError("lasso vertices must be finite numbers.")
        object.__setattr__(self, "xs", xs)
        object.__setattr__(self, "ys", ys)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "projection": self.projection, "lasso": {"xs": list(self.xs), "ys": list(self.ys)}}


@dataclass(frozen=True)
class FilterStep:
    """Subjects passing phenotype filters: a parsed condition, range filters, or both.

    Parameters
    ----------
    condition
        A condition's JSON (``Condition.to_json()``, see :mod:`lse_panel.analysis.conditions`),
        or ``None``.
    ranges
        As ``ExplorerState.filters``: continuous phenotype → ``(lo, hi)`` (inclusive, ``None``
        for an open side); binary/categorical phenotype → the categories to keep, as labels or
        codes (a store saves them as labels, so the rule survives a re-coded bundle).
    text
        The condition as the user typed it, for display.
    mode
        How this step combines with the selection so far.
    """

    condition: Mapping[str, Any] | None = None
    ranges: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""
    mode: SelectionMode = "new"

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        if self.condition is None and not self.ranges:
            raise SubgroupError("a filter step needs a condition or at least one range filter.")
        ranges: dict[str, Any] = {}
        for name, rule in dict(self.ranges).items():
            if isinstance(rule, Mapping) or isinstance(rule, str):
                raise SubgroupError(f"filter on {name!r}: expected (lo, hi) or a list of categories; got {rule!r}.")
            ranges[str(name)] = tuple(v.item() if isinstance(v, np.generic) else v for v in rule)
        object.__setattr__(self, "ranges", ranges)

    @classmethod
    def from_text(cls, text: str, cohort: Cohort, *, mode: SelectionMode = "new") -> FilterStep:
        """A filter step from a condition in the filter language, parsed against ``cohort``.

        Raises
        ------
        ConditionError
            Saying where and why the condition does not parse or fit the cohort's phenotypes.
        """
        from lse_panel.analysis.conditions import parse_condition

        condition = parse_condition(text, cohort.phenotype_specs)
        return cls(condition=condition.to_json(), text=text.strip(), mode=mode)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.condition is not None:
            body["condition"] = dict(self.condition)
        if self.text:
            body["text"] = self.text
        if self.ranges:
            body["ranges"] = {name: list(rule) for name, rule in self.ranges.items()}
        return {"mode": self.mode, "filter": body}


@dataclass(frozen=True, eq=False)
class IdsStep:
    """Subjects named explicitly by id (a pasted or uploaded list, a click in the inspector).

    Parameters
    ----------
    ids
        Subject ids (ints or strings); ids a cohort lacks select nobody there.
    mode
        How this step combines with the selection so far.
    """

    ids: np.ndarray
    mode: SelectionMode = "new"

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        ids = np.asarray(self.ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iuU"):
            raise SubgroupError(
                f"ids must be a 1-D list of integers or strings; got dtype {ids.dtype}, shape {ids.shape}."
            )
        object.__setattr__(self, "ids", ids)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, IdsStep)
            and self.mode == other.mode
            and self.ids.shape == other.ids.shape
            and bool(np.all(self.ids == other.ids))
        )

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "ids": self.ids.tolist()}


Step = Union[BoxStep, LassoStep, FilterStep, IdsStep]
Rule = tuple[Step, ...]
"""The ordered steps that made a selection; :func:`apply_rule` re-runs them."""


def rule_to_json(rule: Sequence[Step]) -> list[dict[str, Any]]:
    """The rule as a JSON-ready list, one dict per step (``{"mode": ..., "box" | "lasso" | "filter" | "ids": ...}``)."""
    return [step.to_json() for step in rule]


def rule_from_json(data: Sequence[Mapping[str, Any] | Step]) -> Rule:
    """Rebuild a rule from :func:`rule_to_json` output (steps already built pass through).

    Raises
    ------
    SubgroupError
        When a step is none of box, lasso, filter or ids, or is malformed.
    """
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise SubgroupError(f"a rule is a list of steps; got {type(data).__name__}.")
    steps: list[Step] = []
    for i, item in enumerate(data):
        if isinstance(item, (BoxStep, LassoStep, FilterStep, IdsStep)):
            steps.append(item)
            continue
        if not isinstance(item, Mapping):
            raise SubgroupError(f"rule step {i}: expected a dict, got {type(item).__name__}.")
        mode = item.get("mode", "new")
        try:
            if "box" in item:
                steps.append(BoxStep(item["projection"], tuple(item["box"]), mode))
            elif "lasso" in item:
                steps.append(LassoStep(item["projection"], item["lasso"]["xs"], item["lasso"]["ys"], mode))
            elif "filter" in item:
                body = item["filter"]
                steps.append(FilterStep(body.get("condition"), body.get("ranges", {}), body.get("text", ""), mode))
            elif "ids" in item:
                steps.append(IdsStep(np.asarray(item["ids"]), mode))
            else:
                raise SubgroupError(
                    f"rule step {i} has keys {sorted(item)}; expected one of 'box', 'lasso', 'filter', 'ids'."
                )
        except SubgroupError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise SubgroupError(f"rule step {i} is malformed ({type(exc).__name__}: {exc}).") from None
    return tuple(steps)


def apply_rule(rule: Sequence[Step | Mapping[str, Any]], cohort: Cohort) -> np.ndarray:
    """Re-run a rule's steps on ``cohort`` and return the subjects it selects there.

    This answers "where does the same rule land now?": the box or lasso is tested against the
    cohort's *current* coordinates of the named projection, filters against its phenotypes, ids
    against its ids. On a bundle re-embedded or re-projected since the subgroup was saved, the
    result can differ from the stored members; :meth:`SubgroupStore.members` answers the other
    question, "where are the same subjects now?".

    Steps run in order, each combined with the selection so far by its mode (``new`` replaces,
    ``add`` unites, ``intersect`` keeps the common subjects, ``subtract`` removes). Before the
    first step the selection is "everyone, undecided": a first ``intersect`` step selects just
    its own subjects (so a rule made of one filter selects the subjects passing it) and a first
    ``subtract`` step selects everyone else.

    Parameters
    ----------
    rule
        Steps, or their JSON dicts.
    cohort
        Any cohort holding the projections and phenotypes the steps name.

    Returns
    -------
    numpy.ndarray
        Sorted, unique int64 row indices of ``cohort``.

    Raises
    ------
    SubgroupError
        When a step names a projection or phenotype the cohort lacks.
    ConditionError
        When a stored condition does not fit this cohort's phenotypes.
    """
    # Imported here: the selection kernels live in the analysis layer (numba), which reading or
    # listing subgroups never needs; only re-running a rule does.
    from lse_panel.analysis.selection import combine, mask_to_indices

    steps = rule_from_json(list(rule))
    n = cohort.n_subjects
    current: np.ndarray | None = None
    for step in steps:
        new = mask_to_indices(_step_mask(step, cohort))
        if current is None:
            current = new if step.mode != "subtract" else combine(np.arange(n, dtype=np.int64), new, "subtract")
        else:
            current = combine(current, new, step.mode)
    return current if current is not None else np.empty(0, dtype=np.int64)


def _step_mask(step: Step, cohort: Cohort) -> np.ndarray:
    from lse_panel.analysis.selection import box_mask, lasso_mask

    if isinstance(step, (BoxStep, LassoStep)):
        if step.projection not in cohort.projections:
            raise SubgroupError(
                f"the rule draws on projection {step.projection!r}, which this cohort lacks; it has "
                f"{', '.join(cohort.projections) or 'none'}. Compute it (`lse build`) or edit the rule."
            )
        coords = cohort.projection(step.projection)
        x, y = coords[:, 0], coords[:, 1]
        if isinstance(step, BoxStep):
            return box_mask(x, y, step.bounds, on_nan="exclude")
        return lasso_mask(x, y, np.asarray(step.xs), np.asarray(step.ys), on_nan="exclude")
    if isinstance(step, IdsStep):
        indices, _ = ids_to_indices(cohort, step.ids)
        mask = np.zeros(cohort.n_subjects, dtype=bool)
        mask[indices] = True
        return mask
    return _filter_mask(step, cohort)


def _filter_mask(step: FilterStep, cohort: Cohort) -> np.ndarray:
    from lse_panel.analysis.conditions import condition_from_json, evaluate
    from lse_panel.analysis.selection import range_mask

    mask = np.ones(cohort.n_subjects, dtype=bool)
    if step.condition is not None:
        mask &= evaluate(condition_from_json(step.condition), cohort)
    for name, rule in step.ranges.items():
        spec = cohort.phenotype_specs.get(name)
        if spec is None:
            raise SubgroupError(
                f"the rule filters on phenotype {name!r}, which this cohort lacks; it has "
                f"{', '.join(cohort.phenotype_specs)}."
            )
        values = cohort.phenotype(name)
        if spec.type == "continuous":
            if len(rule) != 2:
                raise SubgroupError(f"range filter on {name!r} must be (lo, hi); got {list(rule)!r}.")
            lo, hi = rule
            mask &= range_mask(values, lo, hi)
        else:
            keep = np.zeros(cohort.n_subjects, dtype=bool)
            # One equality pass per kept category: np.isin took 12 ms on 500k int8 codes, this 0.2 ms.
            for code in _category_codes(name, rule, spec.categories):
                keep |= values == code
            mask &= keep
    return mask


def _category_codes(name: str, values: Sequence[Any], categories: Sequence[str]) -> list[int]:
    codes = []
    for value in values:
        if isinstance(value, str):
            if value not in categories:
                raise SubgroupError(f"filter on {name!r}: {value!r} is not one of its categories {list(categories)}.")
            codes.append(list(categories).index(value))
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(categories):
            codes.append(int(value))
        else:
            raise SubgroupError(
                f"filter on {name!r}: {value!r} is neither a category label nor a code 0..{len(categories) - 1}."
            )
    return codes


def _labelled(rule: Sequence[Step], cohort: Cohort) -> Rule:
    """The rule, checked against ``cohort``, with category codes in range filters replaced by labels.

    Codes are bundle-specific; labels keep their meaning in a bundle that codes categories in
    another order.
    """
    out: list[Step] = []
    for step in rule:
        if isinstance(step, FilterStep) and step.condition is not None:
            from lse_panel.analysis.conditions import condition_from_json, validate_condition

            validate_condition(condition_from_json(step.condition), cohort.phenotype_specs)
        if isinstance(step, FilterStep) and step.ranges:
            ranges: dict[str, Any] = {}
            for name, values in step.ranges.items():
                spec = cohort.phenotype_specs.get(name)
                if spec is None:
                    raise SubgroupError(
                        f"filter on unknown phenotype {name!r}; this cohort has {', '.join(cohort.phenotype_specs)}."
                    )
                if spec.type == "continuous":
                    ranges[name] = values
                else:
                    ranges[name] = tuple(spec.categories[c] for c in _category_codes(name, values, spec.categories))
            step = FilterStep(step.condition, ranges, step.text, step.mode)
        out.append(step)
    return tuple(out)


# ----------------------------------------------------------------------------- ids


class _IdIndex:
    """Per-cohort sorted ids, built once (an argsort: ~50 ms at 500k), for id → row lookups."""

    _instances: ClassVar[weakref.WeakKeyDictionary[Cohort, _IdIndex]] = weakref.WeakKeyDictionary()

    def __init__(self, ids: np.ndarray) -> None:
        self.order = np.argsort(ids, kind="stable")
        self.sorted = np.asarray(ids)[self.order]

    @classmethod
    def of(cls, cohort: Cohort) -> _IdIndex:
        found = cls._instances.get(cohort)
        if found is None:
            found = cls._instances[cohort] = cls(np.asarray(cohort.ids))
        return found


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted unique int64 copy of ``a``.

    Not ``np.unique``: numpy 2's hash-based unique took 0.35 s for 500k indices here, a sort
    and a neighbour comparison 5 ms, and a selection that is already sorted needs neither.
    """
    a = np.array(a, dtype=np.int64)
    if a.size > 1 and not bool(np.all(a[1:] > a[:-1])):
        a.sort()
        keep = np.empty(a.size, dtype=bool)
        keep[0] = True
        np.not_equal(a[1:], a[:-1], out=keep[1:])
        a = a[keep]
    return a


def ids_to_indices(cohort: Cohort, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``cohort`` holding the subjects ``ids``, and the ids it lacks.

    Parameters
    ----------
    cohort
        The cohort to look in.
    ids
        Subject ids; integer ids also match a cohort whose ids are the same numbers as strings.

    Returns
    -------
    indices : numpy.ndarray
        Sorted, unique int64 rows of the subjects found.
    missing : numpy.ndarray
        The ids not found, in the order given.
    """
    ids = np.asarray(ids)
    if ids.size == 0:
        return np.empty(0, dtype=np.int64), ids
    if cohort.n_subjects == 0:
        return np.empty(0, dtype=np.int64), ids
    index = _IdIndex.of(cohort)
    haystack = index.sorted
    needles = ids
    if (needles.dtype.kind == "U") != (haystack.dtype.kind == "U"):
        # A bundle rebuilt with string ids (or the reverse): compare the ids' text.
        haystack, needles = haystack.astype(str), needles.astype(str)
        order = np.argsort(haystack, kind="stable")
        haystack, rows = haystack[order], index.order[order]
    else:
        rows = index.order
    pos = np.searchsorted(haystack, needles)
    pos_clipped = np.minimum(pos, haystack.size - 1)
    found = (pos < haystack.size) & (haystack[pos_clipped] == needles)
    indices = _sorted_unique(rows[pos_clipped[found]])
    return indices, ids[~found]


# ----------------------------------------------------------------------------- subgroups


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
    """

    name: str
    colour: str
    ids: np.ndarray
    rows: np.ndarray
    rule: Rule
    created: str

    @property
    def n(self) -> int:
        """Number of members."""
        return int(self.ids.shape[0])

    def summary(self) -> dict[str, Any]:
        """Small JSON-ready description (no member arrays), for lists and tables."""
        return {"name": self.name, "colour": self.colour, "n": self.n, "created": self.created, "steps": len(self.rule)}


def validate_name(name: str) -> str:
    """The name, stripped, if it can name a subgroup; otherwise :class:`SubgroupError` saying why."""
    if not isinstance(name, str):
        raise SubgroupError(f"a subgroup name is text; got {type(name).__name__}.")
    stripped = name.strip()
    if not stripped:
        raise SubgroupError("a subgroup needs a name; the name is empty.")
    if len(stripped) > MAX_NAME_LENGTH:
        raise SubgroupError(f"subgroup names are at most {MAX_NAME_LENGTH} characters; this one has {len(stripped)}.")
    if "/" in stripped or "\\" in stripped or os.sep in stripped:
        raise SubgroupError(f"subgroup name {stripped!r} contains a path separator ('/' or '\\'); choose another.")
    if any(ord(c) < 32 or ord(c) == 127 for c in stripped):
        raise SubgroupError(f"subgroup name {stripped!r} contains a control character; choose another.")
    return stripped


def validate_colour(colour: str) -> str:
    """``colour`` as lower-case ``#rrggbb``; :class:`SubgroupError` unless it is ``#rgb`` or ``#rrggbb``."""
    if not isinstance(colour, str) or not _HEX.match(colour):
        raise SubgroupError(f"colour {colour!r} is not a hex colour like '#1f77b4' (or '#17b').")
    colour = colour.lower()
    if len(colour) == 4:
        colour = "#" + "".join(c * 2 for c in colour[1:])
    return colour


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
    every read goes back to disk, so a subgroup saved in one session shows up in all of them.

    For a cohort without a path (built in memory), subgroups are kept in memory, shared by every
    store on that cohort object, and lost with it.

    Parameters
    ----------
    cohort
        The cohort whose row indices ``save`` takes and ``members`` returns.
    """

    _memory: ClassVar[weakref.WeakKeyDictionary[Cohort, dict[str, dict[str, Any]]]] = weakref.WeakKeyDictionary()
    _thread_lock: ClassVar[threading.RLock] = threading.RLock()
    """Serialises changes between sessions (threads) of one process; the file lock covers processes."""

    def __init__(self, cohort: Cohort) -> None:
        self.cohort = cohort
        self.path = Path(cohort.path) if cohort.path is not None else None

    # -- reading ------------------------------------------------------------------------
    def list(self) -> list[Subgroup]:
        """Every saved subgroup, oldest first."""
        with self._lock(exclusive=False):
            entries = self._read()
            return [self._load(entry) for entry in entries.values()]

    def names(self) -> list[str]:
        """Names of the saved subgroups, oldest first."""
        with self._lock(exclusive=False):
            return list(self._read())

    def get(self, name: str) -> Subgroup:
        """The subgroup called ``name``; :class:`UnknownSubgroupError` listing the names if none."""
        with self._lock(exclusive=False):
            entries = self._read()
            return self._load(self._entry(entries, name))

    def __contains__(self, name: object) -> bool:
        # Case-insensitive, like every other lookup: names are unique ignoring case.
        with self._lock(exclusive=False):
            return isinstance(name, str) and self._find(self._read(), name) is not None

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
            Sorted, unique int64 row indices.
        """
        group = self.get(name)
        target = cohort if cohort is not None else self.cohort
        rows = np.asarray(group.rows, dtype=np.int64)
        ids = np.asarray(group.ids)
        if rows.size == 0:
            return rows.copy()
        # Fast path: the cohort still holds these subjects at the saved rows (same bundle, or one
        # rebuilt in the same order), checked exactly before it is trusted.
        target_ids = np.asarray(target.ids)
        if (
            rows[-1] < target.n_subjects
            and (ids.dtype.kind == "U") == (target_ids.dtype.kind == "U")
            and np.array_equal(target_ids[rows], ids)
        ):
            return rows.copy()
        indices, absent = ids_to_indices(target, ids)
        if absent.size and missing == "raise":
            raise SubgroupError(
                f"subgroup {group.name!r}: {absent.size} of its {group.n} subjects are not in this cohort "
                f"(e.g. {absent[:5].tolist()}). Pass missing='drop' to use the others."
            )
        return indices

    def reapply(self, name: str, *, cohort: Cohort | None = None) -> np.ndarray:
        """Re-run the saved rule of ``name`` on ``cohort`` (default: this store's); see :func:`apply_rule`."""
        return apply_rule(self.get(name).rule, cohort if cohort is not None else self.cohort)

    def apply_rule(self, rule: Sequence[Step | Mapping[str, Any]], cohort: Cohort | None = None) -> np.ndarray:
        """:func:`apply_rule` on ``cohort`` (default: this store's cohort)."""
        return apply_rule(rule, cohort if cohort is not None else self.cohort)

    # -- changing -----------------------------------------------------------------------
    def save(
        self,
        name: str,
        indices: np.ndarray,
        rule: Sequence[Step | Mapping[str, Any]] = (),
        colour: str | None = None,
        *,
        overwrite: bool = False,
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
            Replace an existing subgroup of that name (keeping its colour unless one is given).

        Returns
        -------
        Subgroup
            As saved.
        """
        name = validate_name(name)
        rows = self._indices(indices)
        steps = _labelled(rule_from_json(list(rule)), self.cohort)
        ids = np.asarray(self.cohort.ids)[rows]
        with self._lock(exclusive=True):
            entries = self._read()
            existing = self._find(entries, name)
            if existing is not None and not overwrite:
                raise SubgroupError(
                    f"a subgroup called {existing!r} already exists; choose another name, rename or delete "
                    "it first, or pass overwrite=True."
                )
            old = entries.pop(existing) if existing is not None else None
            if colour is not None:
                colour = validate_colour(colour)
            elif old is not None:
                colour = old["colour"]
            else:
                used = {e["colour"] for e in entries.values()}
                colour = next((c for c in PALETTE if c not in used), PALETTE[len(entries) % len(PALETTE)])
            entry = self._write_members(name, ids, rows, steps)
            entry.update(name=name, colour=colour, created=_now())
            entries[name] = entry
            self._commit(entries)
            return self._load(entry)

    def save_condition(self, name: str, text: str, *, colour: str | None = None, overwrite: bool = False) -> Subgroup:
        """Save the subjects matching a condition (e.g. ``'age >= 60 and sex == "female"'``) as ``name``.

        The condition is parsed by :func:`lse_panel.analysis.conditions.parse_condition` (never
        evaluated as Python) and stored as the subgroup's rule.

        Raises
        ------
        ConditionError
            When the condition does not parse or does not fit the cohort's phenotypes.
        """
        from lse_panel.analysis.conditions import condition_from_json, evaluate

        step = FilterStep.from_text(text, self.cohort)
        mask = evaluate(condition_from_json(step.condition), self.cohort)
        return self.save(name, mask, [step], colour, overwrite=overwrite)

    def rename(self, old: str, new: str) -> Subgroup:
        """Rename subgroup ``old`` to ``new`` (validated like a new name)."""
        new = validate_name(new)
        with self._lock(exclusive=True):
            entries = self._read()
            current = self._find(entries, old)
            if current is None:
                raise self._unknown(entries, old)
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

    def recolour(self, name: str, colour: str) -> Subgroup:
        """Give subgroup ``name`` the colour ``colour`` (``#rrggbb`` or ``#rgb``)."""
        colour = validate_colour(colour)
        with self._lock(exclusive=True):
            entries = self._read()
            key = self._entry_key(entries, name)
            entries[key] = {**entries[key], "colour": colour}
            self._commit(entries)
            return self._load(entries[key])

    def delete(self, name: str) -> None:
        """Delete subgroup ``name`` and its member files."""
        with self._lock(exclusive=True):
            entries = self._read()
            del entries[self._entry_key(entries, name)]
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
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq"):
            raise SubgroupError(f"cannot export to {path.name!r}: use a .csv or .parquet file name.")
        table = self.table(name, phenotypes=phenotypes)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            if suffix == ".csv":
                table.to_csv(tmp, index=False)
            else:
                table.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def table(self, name: str, *, phenotypes: Sequence[str] | None = None) -> pd.DataFrame:
        """A subgroup's members as a DataFrame: ``id`` then phenotype columns (categories as labels)."""
        rows = self.members(name)
        names = list(self.cohort.phenotype_specs) if phenotypes is None else list(phenotypes)
        columns: dict[str, Any] = {"id": np.asarray(self.cohort.ids)[rows]}
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
        a = _sorted_unique(a)
        if a.size and (a[0] < 0 or a[-1] >= n):
            raise SubgroupError(f"indices must lie in 0..{n - 1}; got {a[0]}..{a[-1]}.")
        return a

    @staticmethod
    def _find(entries: Mapping[str, Any], name: str) -> str | None:
        # Names are unique ignoring case, so "LVH" and "lvh" never sit side by side in a list.
        if not isinstance(name, str):
            return None
        wanted = name.strip().casefold()
        return next((key for key in entries if key.casefold() == wanted), None)

    def _entry_key(self, entries: Mapping[str, Any], name: str) -> str:
        key = self._find(entries, name)
        if key is None:
            raise self._unknown(entries, name)
        return key

    def _entry(self, entries: Mapping[str, Any], name: str) -> dict[str, Any]:
        return entries[self._entry_key(entries, name)]

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
        file = self.path / STORE_FILE
        if not file.exists():
            return {}
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise SubgroupError(
                f"{file}: not valid JSON ({exc}); the saved subgroups cannot be read. Restore the file from "
                "a backup, or move it aside to start an empty list."
            ) from None
        if not isinstance(data, dict) or data.get("version") != STORE_VERSION:
            raise SubgroupError(
                f"{file}: field 'version' is {data.get('version') if isinstance(data, dict) else None!r}; this "
                f"lse-panel reads version {STORE_VERSION}. Use the lse-panel version that wrote it."
            )
        return {entry["name"]: entry for entry in data.get("subgroups", [])}

    def _load(self, entry: Mapping[str, Any]) -> Subgroup:
        if self.path is None:
            ids, rows, rule = entry["ids"], entry["rows"], entry["rule"]
        else:
            ids = self._load_array(entry["files"]["ids"])
            rows = self._load_array(entry["files"]["rows"])
            rule = rule_from_json([self._expand_step(step) for step in entry["rule"]])
        return Subgroup(entry["name"], entry["colour"], ids, rows, tuple(rule), entry["created"])

    def _load_array(self, relative: str) -> np.ndarray:
        assert self.path is not None
        file = self.path / relative
        try:
            # Memory-mapped: listing many large subgroups reads only their headers.
            return np.load(file, mmap_mode="r", allow_pickle=False)
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
        atomic_save_npy(self.path / files["ids"], ids)
        atomic_save_npy(self.path / files["rows"], rows)
        steps: list[dict[str, Any]] = []
        for k, step in enumerate(rule):
            data = step.to_json()
            if isinstance(step, IdsStep) and step.ids.size > INLINE_IDS:
                relative = f"{stem}.step{k}.ids.npy"
                atomic_save_npy(self.path / relative, step.ids)
                data = {"mode": step.mode, "ids_file": relative}
            steps.append(data)
        return {"n": int(rows.size), "files": files, "rule": steps}

    def _commit(self, entries: dict[str, dict[str, Any]]) -> None:
        if self.path is None:
            self._memory[self.cohort] = entries
            return
        listing = []
        for entry in entries.values():
            ordered = {k: entry[k] for k in ("name", "colour", "created", "n", "files", "rule")}
            listing.append(ordered)
        atomic_write_json(self.path / STORE_FILE, {"version": STORE_VERSION, "subgroups": listing})
        self._collect_garbage(entries)

    def _collect_garbage(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Remove member files no subgroup names (left by deletes, overwrites and crashed saves)."""
        assert self.path is not None
        directory = self.path / MEMBER_DIR
        if not directory.is_dir():
            return
        named = set()
        for entry in entries.values():
            named.update(entry["files"].values())
            named.update(step["ids_file"] for step in entry["rule"] if "ids_file" in step)
        # Safe under the exclusive lock: no other writer is between writing files and the list.
        for file in directory.iterdir():
            if f"{MEMBER_DIR}/{file.name}" not in named and file.is_file():
                file.unlink(missing_ok=True)
