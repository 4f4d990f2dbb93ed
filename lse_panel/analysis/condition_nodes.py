"""The condition language's data: the node types a parsed filter becomes, their JSON and text forms, and its error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping, Protocol, Union

__all__ = [
    "MAX_DEPTH",
    "And",
    "Between",
    "Compare",
    "CompareOp",
    "Condition",
    "ConditionError",
    "Constant",
    "In",
    "Not",
    "Or",
    "PhenotypeSpec",
    "condition_from_json",
    "literal_text",
]


class PhenotypeSpec(Protocol):
    """What the language needs to know of a phenotype (``lse_panel.cohort.schema.PhenotypeSpec`` is one)."""

    name: str
    type: str
    units: str
    categories: tuple[str, ...]


CompareOp = Literal["==", "!=", "<", "<=", ">", ">="]

MAX_DEPTH = 64
"""Deepest nesting of parentheses and ``not`` accepted: the AST is walked recursively, so an
absurdly nested input must become a ConditionError rather than a RecursionError."""


class ConditionError(ValueError):
    """A condition that cannot be parsed or does not fit the cohort's phenotypes.

    The message says why and, when the problem has a place in the text, where: line and column
    (1-based) and the offending line with a caret under the culprit.

    Attributes
    ----------
    reason
        What is wrong, without the position.
    text
        The condition as written ("" when the condition came from JSON).
    line, column
        1-based position of the problem, or ``None`` when it has none.
    """

    def __init__(
        self,
        reason: str,
        *,
        text: str = "",
        line: int | None = None,
        column: int | None = None,
        width: int = 1,
    ) -> None:
        self.reason = reason
        self.text = text
        self.line = line
        self.column = column
        super().__init__(self._format(max(1, width)))

    def _format(self, width: int) -> str:
        if self.line is None or self.column is None:
            return self.reason
        lines = self.text.splitlines() or [""]
        source = lines[self.line - 1] if 0 < self.line <= len(lines) else ""
        # Tabs would shift the caret; show the line with tabs as single spaces instead.
        source = source.replace("\t", " ")
        caret = " " * (self.column - 1) + "^" * min(width, max(1, len(source) - self.column + 1))
        return f"line {self.line}, column {self.column}: {self.reason}\n  {source}\n  {caret}"


# ----------------------------------------------------------------------------- the AST


class _Node:
    """Shared behaviour of the condition nodes: JSON and text round trips."""

    kind: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; :func:`condition_from_json` rebuilds the same node."""
        raise NotImplementedError

    def to_text(self) -> str:
        """The condition written in the filter language; it parses back to an equal node."""
        raise NotImplementedError

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Condition:
        """Rebuild a condition from :meth:`to_json` output (see :func:`condition_from_json`)."""
        return condition_from_json(data)

    def names(self) -> set[str]:
        """Every phenotype the condition reads."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.to_text()


Constant = Union[float, str]
"""A constant in a condition: a number, or a category label."""


def literal_text(value: Constant) -> str:
    """``value`` written as a constant of the language: a quoted, escaped label or a number."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _name_text(name: str) -> str:
    plain = name.isidentifier() and name.isascii() and name.lower() not in ("and", "or", "not", "in", "between")
    return name if plain else f"`{name}`"


@dataclass(frozen=True)
class Compare(_Node):
    """``name op value``: a continuous phenotype against a number, a category against a label."""

    name: str
    op: CompareOp
    value: Constant
    kind: ClassVar[str] = "compare"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "op": self.op, "value": self.value}

    def to_text(self) -> str:
        return f"{_name_text(self.name)} {self.op} {literal_text(self.value)}"

    def names(self) -> set[str]:
        return {self.name}


@dataclass(frozen=True)
class Between(_Node):
    """``name between lo and hi``, both ends included."""

    name: str
    lo: float
    hi: float
    kind: ClassVar[str] = "between"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "lo": self.lo, "hi": self.hi}

    def to_text(self) -> str:
        return f"{_name_text(self.name)} between {literal_text(self.lo)} and {literal_text(self.hi)}"

    def names(self) -> set[str]:
        return {self.name}


@dataclass(frozen=True)
class In(_Node):
    """``name in (v1, v2, ...)`` or, with ``negate``, ``name not in (...)``."""

    name: str
    values: tuple[Constant, ...]
    negate: bool = False
    kind: ClassVar[str] = "in"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "values": list(self.values), "negate": self.negate}

    def to_text(self) -> str:
        values = ", ".join(literal_text(v) for v in self.values)
        return f"{_name_text(self.name)} {'not in' if self.negate else 'in'} ({values})"

    def names(self) -> set[str]:
        return {self.name}


@dataclass(frozen=True)
class Not(_Node):
    """Negation. Missing values stay unmatched: ``not age > 60`` does not select unknown ages."""

    operand: Condition
    kind: ClassVar[str] = "not"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "operand": self.operand.to_json()}

    def to_text(self) -> str:
        inner = self.operand.to_text()
        return f"not ({inner})" if isinstance(self.operand, (And, Or)) else f"not {inner}"

    def names(self) -> set[str]:
        return self.operand.names()


@dataclass(frozen=True)
class And(_Node):
    """All operands hold (two or more)."""

    operands: tuple[Condition, ...]
    kind: ClassVar[str] = "and"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "operands": [op.to_json() for op in self.operands]}

    def to_text(self) -> str:
        # `and` binds tighter than `or`, so only an `or` operand needs parentheses.
        return " and ".join(f"({op.to_text()})" if isinstance(op, Or) else op.to_text() for op in self.operands)

    def names(self) -> set[str]:
        return set().union(*(op.names() for op in self.operands))


@dataclass(frozen=True)
class Or(_Node):
    """At least one operand holds (two or more)."""

    operands: tuple[Condition, ...]
    kind: ClassVar[str] = "or"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "operands": [op.to_json() for op in self.operands]}

    def to_text(self) -> str:
        # Parentheses around an `and` operand are redundant but spare the reader the precedence rule.
        return " or ".join(f"({op.to_text()})" if isinstance(op, And) else op.to_text() for op in self.operands)

    def names(self) -> set[str]:
        return set().union(*(op.names() for op in self.operands))


Condition = Union[Compare, Between, In, Not, And, Or]
"""A parsed condition: a tree of the frozen dataclasses above."""

_KINDS: dict[str, type] = {cls.kind: cls for cls in (Compare, Between, In, Not, And, Or)}


def condition_from_json(data: Mapping[str, Any]) -> Condition:
    """Rebuild a condition from its :meth:`to_json` dict.

    Parameters
    ----------
    data
        As written by ``Condition.to_json()`` (for instance read back from ``subgroups.json``).

    Returns
    -------
    Condition
        The equal node tree. Names and values are checked against a cohort only when the
        condition is evaluated, since the JSON may come from another bundle.

    Raises
    ------
    ConditionError
        When the dict is not a condition (unknown ``kind``, missing or mistyped fields).
    """
    return _from_json(data, 0)


def _from_json(data: Any, depth: int) -> Condition:
    if depth > MAX_DEPTH:
        raise ConditionError(f"stored condition is nested more than {MAX_DEPTH} levels deep.")
    if not isinstance(data, Mapping) or data.get("kind") not in _KINDS:
        kind = data.get("kind") if isinstance(data, Mapping) else type(data).__name__
        raise ConditionError(
            f"not a stored condition: kind {kind!r}; expected one of {', '.join(map(repr, _KINDS))}."
        )
    kind = data["kind"]
    try:
        if kind == "compare":
            if data["op"] not in ("==", "!=", "<", "<=", ">", ">="):
                raise ConditionError(f"stored condition has unknown operator {data['op']!r}.")
            return Compare(str(data["name"]), data["op"], _json_literal(data["value"]))
        if kind == "between":
            return Between(str(data["name"]), float(data["lo"]), float(data["hi"]))
        if kind == "in":
            values = tuple(_json_literal(v) for v in data["values"])
            return In(str(data["name"]), values, bool(data.get("negate", False)))
        if kind == "not":
            return Not(_from_json(data["operand"], depth + 1))
        operands = tuple(_from_json(op, depth + 1) for op in data["operands"])
        if len(operands) < 2:
            raise ConditionError(f"stored {kind!r} condition needs at least two operands, got {len(operands)}.")
        return And(operands) if kind == "and" else Or(operands)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConditionError):
            raise
        raise ConditionError(f"stored {kind!r} condition is malformed ({type(exc).__name__}: {exc}).") from None


def _json_literal(value: Any) -> Constant:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"condition constants are numbers or strings, not {type(value).__name__}")
    return float(value)
