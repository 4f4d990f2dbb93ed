"""Subgroup rules: the steps (box, lasso, filter, ids) that made a selection, their JSON, and re-running them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np

from lse_panel.analysis.selection import MODES, SelectionMode
from lse_panel.cohort.ids import ids_to_indices

if TYPE_CHECKING:
    from lse_panel.cohort.bundle import Cohort

__all__ = [
    "BoxStep",
    "FilterStep",
    "IdsStep",
    "LassoStep",
    "Rule",
    "Step",
    "SubgroupError",
    "UnknownSubgroupError",
    "apply_rule",
    "labelled_rule",
    "rule_from_json",
    "rule_to_json",
]


class SubgroupError(ValueError):
    """A subgroup operation that cannot be done; the message says why and what to do instead."""


class UnknownSubgroupError(SubgroupError, KeyError):
    """No subgroup of that name (a ``KeyError`` too, so ``except KeyError`` also catches it)."""

    def __str__(self) -> str:
        # KeyError would show the repr of the message; this one reads as a sentence.
        return str(self.args[0]) if self.args else ""


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
    from lse_panel.analysis.conditions import condition_from_json
    from lse_panel.analysis.phenotype_filters import evaluate, filter_mask

    columns, specs = cohort.phenotype_columns, cohort.phenotype_specs
    mask = np.ones(cohort.n_subjects, dtype=bool)
    if step.condition is not None:
        mask &= evaluate(condition_from_json(step.condition), columns, specs)
    ranges: dict[str, Any] = {}
    for name, rule in step.ranges.items():
        spec = specs.get(name)
        if spec is None:
            raise SubgroupError(
                f"the rule filters on phenotype {name!r}, which this cohort lacks; it has "
                f"{', '.join(specs)}."
            )
        if spec.type == "continuous" and len(rule) != 2:
            raise SubgroupError(f"range filter on {name!r} must be (lo, hi); got {list(rule)!r}.")
        ranges[name] = rule if spec.type == "continuous" else _category_codes(name, rule, spec.categories)
    passing = filter_mask(columns, specs, ranges)
    return mask if passing is None else mask & passing


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


def labelled_rule(rule: Sequence[Step], cohort: Cohort) -> Rule:
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
