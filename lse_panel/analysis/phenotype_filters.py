"""Which subjects pass phenotype filters: parsed conditions and the sidebar's ranges, as boolean masks."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lse_panel.analysis.condition_nodes import And, Between, Compare, Condition, Constant, Not, Or, PhenotypeSpec
from lse_panel.analysis.conditions import match_category, parse_condition, validate_condition
from lse_panel.analysis.selection import range_mask

__all__ = ["evaluate", "filter_mask"]

Columns = Mapping[str, Any]
"""Phenotype name → one value per subject (a numpy array, memory-mapped or not)."""

_EQUALITY_PASSES = 16
"""Up to this many wanted values, one ``==`` pass each beats ``np.isin``: 0.2–0.5 ms against
12 ms for 500k int8 category codes."""


def filter_mask(
    columns: Columns, specs: Mapping[str, PhenotypeSpec], ranges: Mapping[str, Any]
) -> np.ndarray | None:
    """Subjects passing every range filter, or ``None`` when no filter restricts anything.

    The sidebar's sliders and category buttons, and a saved rule's range step, all go through
    here.

    Parameters
    ----------
    columns
        Phenotype name → values (at least those named in ``ranges``).
    specs
        Phenotype name → spec (its ``type`` and ``categories``).
    ranges
        A continuous phenotype → ``(lo, hi)`` (inclusive; ``None`` for an open side; NaN never
        passes); a binary/categorical one → the category codes to keep (a rule keeping every
        category restricts nothing and is skipped, so subjects with a missing value stay).

    Returns
    -------
    numpy.ndarray or None
        Boolean mask, one entry per subject.
    """
    mask: np.ndarray | None = None
    for name, rule in ranges.items():
        spec = specs[name]
        values = np.asarray(columns[name])
        if spec.type == "continuous":
            lo, hi = rule
            keep = range_mask(values, lo, hi)
        else:
            codes = sorted({int(c) for c in rule})
            if len(codes) >= len(spec.categories):
                continue
            keep = _any_equal(values, [np.asarray(c, dtype=values.dtype) for c in codes])
        mask = keep if mask is None else (mask & keep)
    return mask


def _any_equal(column: np.ndarray, wanted: list[np.ndarray]) -> np.ndarray:
    if len(wanted) > _EQUALITY_PASSES:
        return np.isin(column, np.array(wanted, dtype=column.dtype))
    holds = np.zeros(column.shape, dtype=bool)
    for value in wanted:
        holds |= column == value
    return holds


def evaluate(condition: Condition | str, columns: Columns, specs: Mapping[str, PhenotypeSpec]) -> np.ndarray:
    """The subjects for which ``condition`` holds, as a boolean mask.

    Vectorised over the (memory-mapped) phenotype columns: one numpy comparison per leaf, one
    logical operation per ``and``/``or``/``not``. A missing value (NaN, or category code -1)
    never matches, whatever the operators around it: logic is three-valued as in SQL, so
    ``not age > 60`` and ``age != 60`` leave out subjects of unknown age too.

    Numbers are compared in the column's own dtype (float32 for continuous phenotypes), as the
    range filters do, so a value displayed as ``60.1`` satisfies ``age == 60.1``.

    Parameters
    ----------
    condition
        A parsed condition, or text to parse against ``specs``.
    columns
        Phenotype name → values, one per subject (e.g. ``cohort.phenotype_columns``).
    specs
        The phenotype specs of those columns; a condition parsed on another bundle is re-checked
        against them (names present, category labels known) before anything is computed.

    Returns
    -------
    numpy.ndarray
        Boolean mask, one entry per subject.

    Raises
    ------
    ConditionError
        When the condition names a phenotype or category these specs lack, or a type that
        does not fit (for instance a stored condition written for another bundle).
    """
    if isinstance(condition, str):
        condition = parse_condition(condition, specs)
    validate_condition(condition, specs)
    true, _false = _eval(condition, columns, specs)
    return true


def _eval(node: Condition, columns: Columns, specs: Mapping[str, PhenotypeSpec]) -> tuple[np.ndarray, np.ndarray]:
    """``(holds, fails)`` masks; a subject in neither has a value the condition cannot judge."""
    if isinstance(node, (And, Or)):
        true, false = _eval(node.operands[0], columns, specs)
        for operand in node.operands[1:]:
            t, f = _eval(operand, columns, specs)
            if isinstance(node, And):
                true &= t
                false |= f
            else:
                true |= t
                false &= f
        return true, false
    if isinstance(node, Not):
        true, false = _eval(node.operand, columns, specs)
        return false, true
    spec = specs[node.name]
    column = np.asarray(columns[node.name])
    if spec.type == "continuous":
        known = ~np.isnan(column) if column.dtype.kind == "f" else np.ones(column.shape, dtype=bool)

        def const(v: Constant) -> np.ndarray:
            return np.asarray(v, dtype=column.dtype)
    else:
        known = column >= 0

        def const(v: Constant) -> np.ndarray:
            return np.asarray(spec.categories.index(match_category(str(v), spec)), dtype=column.dtype)

    if isinstance(node, Compare):
        holds = _COMPARE[node.op](column, const(node.value))
    elif isinstance(node, Between):
        holds = (column >= const(node.lo)) & (column <= const(node.hi))
    else:
        holds = _any_equal(column, [const(v) for v in node.values])
        if node.negate:
            holds = ~holds
    return holds & known, ~holds & known


_COMPARE = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}
