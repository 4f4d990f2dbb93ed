"""A small, safe filter language over phenotypes: parsed by a grammar into data (:mod:`condition_nodes`), never executed."""

from __future__ import annotations

import difflib
import math
from typing import Any, Mapping

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from lse_panel.analysis.condition_nodes import (
    MAX_DEPTH,
    And,
    Between,
    Compare,
    Condition,
    ConditionError,
    In,
    Not,
    Or,
    PhenotypeSpec,
    condition_from_json,
    literal_text,
)

__all__ = [
    "And",
    "Between",
    "Compare",
    "Condition",
    "ConditionError",
    "In",
    "Not",
    "Or",
    "PhenotypeSpec",
    "condition_from_json",
    "match_category",
    "parse_condition",
    "validate_condition",
]

MAX_LENGTH = 10_000
"""Longest condition accepted, in characters: a typed filter is far shorter, and a bound keeps
a pasted megabyte from tying up a server process."""

EXAMPLE = 'age >= 60 and sex == "female"'

# The grammar is the whole language: a name, an operator and a literal, combined by and/or/not.
# There is no call, attribute, arithmetic or identifier-as-value production, so no input can
# describe anything but a comparison of a phenotype column with a constant.
_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (OR and_expr)*
?and_expr: not_expr (AND not_expr)*
?not_expr: NOT not_expr -> negation
         | atom
?atom: predicate
     | "(" or_expr ")"
?predicate: name OP value -> compare
          | name BETWEEN value AND value -> between
          | name NOT? IN "(" value ("," value)* ","? ")" -> isin
name: NAME | QUOTED_NAME
value: NUMBER | STRING

OR: "or"i
AND: "and"i
NOT: "not"i
IN: "in"i
BETWEEN: "between"i
OP: "==" | "!=" | "<=" | ">=" | "<" | ">"
NAME: /[A-Za-z_][A-Za-z0-9_]*/i
QUOTED_NAME: /`[^`\n]+`/
NUMBER: /[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
STRING: /"(?:[^"\\\n]|\\.)*"/ | /'(?:[^'\\\n]|\\.)*'/
%ignore /[ \t\r\n]+/
"""

_PARSER = Lark(_GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)

# What the user should read instead of lark's terminal names when a token was expected.
_EXPECTED_WORDS = {
    "NAME": "a phenotype name",
    "QUOTED_NAME": "a phenotype name",
    "OP": "a comparison (==, !=, <, <=, >, >=)",
    "BETWEEN": "'between'",
    "IN": "'in'",
    "NUMBER": "a number",
    "STRING": "a quoted string",
    "AND": "'and'",
    "OR": "'or'",
    "NOT": "'not'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "$END": "the end of the condition",
}


# ----------------------------------------------------------------------------- parsing


def parse_condition(text: str, specs: Mapping[str, PhenotypeSpec]) -> Condition:
    """Parse a filter written in the condition language and check it against the phenotypes.

    The language: comparisons ``name op value`` (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``),
    ``name between lo and hi`` (inclusive), ``name in (v1, v2, ...)`` and ``name not in (...)``,
    combined with ``not`` / ``and`` / ``or`` (that precedence, keywords in any case) and
    parentheses. Numbers may be negative or have decimals and exponents; strings use single or
    double quotes; a phenotype whose name is not a plain identifier is written in backticks.
    Continuous phenotypes compare with numbers; binary and categorical ones with a category label
    (``sex == "female"``, case-insensitive) or its integer code (``sex == 0``), by equality only.

    The text is tokenised and parsed by a fixed LALR grammar into frozen dataclasses; nothing in
    it is ever evaluated as Python, so ``__import__('os')`` is just a syntax error.

    Parameters
    ----------
    text
        The condition, e.g. ``'age >= 60 and sex == "female"'``.
    specs
        The cohort's phenotype specs (``cohort.phenotype_specs``): names are checked against
        them, and category codes are turned into labels.

    Returns
    -------
    Condition
        The AST; category values are stored as labels so the condition means the same on a
        bundle whose categories are coded in another order.

    Raises
    ------
    ConditionError
        Saying where (line, column, a caret under the culprit) and why: a syntax error, an unknown
        phenotype (with close matches), a value of the wrong type or an unknown category.
    """
    if not isinstance(text, str):
        raise ConditionError(f"a condition is text; got {type(text).__name__}.")
    if not text.strip():
        raise ConditionError(f"the condition is empty; write one such as {EXAMPLE}.")
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"the condition is {len(text):,} characters long; the limit is {MAX_LENGTH:,}.")
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from None
    _check_depth(tree, text)
    return _Builder(text, specs).build(tree)


def _syntax_error(exc: UnexpectedInput, text: str) -> ConditionError:
    if isinstance(exc, UnexpectedCharacters):
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        if char in "\"'":
            reason = "unterminated string: close it with a matching quote on the same line."
        elif char == "`":
            reason = "unterminated `name`: close it with a backtick on the same line."
        elif char == "=":
            reason = "unexpected '=': compare with '==' (or '<=', '>=', '!=')."
        else:
            reason = (
                f"unexpected character {char!r}: a condition holds only phenotype names, numbers, quoted "
                "strings, comparisons, and/or/not, 'between', 'in', parentheses and commas."
            )
        return ConditionError(reason, text=text, line=exc.line, column=exc.column)
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        expected = _expected(exc.expected)
        lines = text.rstrip().splitlines() or [""]
        line = len(lines)
        column = len(lines[-1]) + 1
        unclosed = _open_parens(text)
        reason = f"the condition ends too early: expected {expected}."
        if unclosed > 0 and "RPAR" in exc.expected:
            reason = f"{unclosed} '(' not closed: expected {expected}."
        return ConditionError(reason, text=text, line=line, column=column)
    assert isinstance(exc, UnexpectedToken)
    token = exc.token
    expected = _expected(exc.expected)
    if token.type == "RPAR" and _open_parens(text[: token.start_pos]) <= 0:
        reason = f"unmatched ')': expected {expected}."
    else:
        reason = f"unexpected {_describe(token)}: expected {expected}."
    if token.type == "LPAR" and exc.expected & {"OP", "BETWEEN", "IN", "NOT"}:
        reason += " Function calls are not part of the condition language."
    return ConditionError(reason, text=text, line=token.line, column=token.column, width=len(str(token)))


def _open_parens(text: str) -> int:
    """Parentheses opened but not closed in ``text`` (quoted strings and names skipped)."""
    depth = 0
    quote = ""
    for i, char in enumerate(text):
        if quote:
            if char == quote and text[i - 1] != "\\":
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
    return depth


def _describe(token: Token) -> str:
    if token.type in ("NAME", "QUOTED_NAME"):
        return f"name {str(token)!r}"
    if token.type == "NUMBER":
        return f"number {str(token)}"
    if token.type == "STRING":
        return f"string {str(token)}"
    return repr(str(token))


def _expected(names: set[str]) -> str:
    words = sorted({_EXPECTED_WORDS.get(name, name.lower()) for name in names})
    if not words:
        return "something else"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _check_depth(tree: Tree, text: str) -> None:
    # Iterative on purpose: the check must not itself overflow the stack it protects.
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            meta = node.meta
            raise ConditionError(
                f"the condition is nested more than {MAX_DEPTH} levels deep; simplify it.",
                text=text,
                line=getattr(meta, "line", None),
                column=getattr(meta, "column", None),
            )
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


class _Builder:
    """Turns lark's parse tree into the checked AST, raising positioned errors."""

    def __init__(self, text: str, specs: Mapping[str, PhenotypeSpec]) -> None:
        self.text = text
        self.specs = specs

    def error(self, reason: str, token: Token) -> ConditionError:
        return ConditionError(reason, text=self.text, line=token.line, column=token.column, width=len(str(token)))

    def build(self, tree: Tree | Token) -> Condition:
        assert isinstance(tree, Tree)
        rule = tree.data
        if rule == "or_expr":
            return Or(tuple(self.build(c) for c in tree.children if isinstance(c, Tree)))
        if rule == "and_expr":
            return And(tuple(self.build(c) for c in tree.children if isinstance(c, Tree)))
        if rule == "negation":
            return Not(self.build(tree.children[1]))
        if rule == "compare":
            name_tree, op, value_tree = tree.children
            name, spec = self.name(name_tree)
            value_token = value_tree.children[0]
            if spec.type == "continuous":
                return Compare(name, str(op), self.number(value_token, name, spec))
            if str(op) not in ("==", "!="):
                raise self.error(
                    f"{name!r} is {spec.type} (categories {_labels(spec)}): it has no order, so compare it "
                    f"with == or != (or use 'in'), e.g. {name} == {literal_text(spec.categories[0])}.",
                    op,
                )
            return Compare(name, str(op), self.category(value_token, name, spec))
        if rule == "between":
            name_tree, between, lo_tree, _and, hi_tree = tree.children
            name, spec = self.name(name_tree)
            if spec.type != "continuous":
                raise self.error(
                    f"{name!r} is {spec.type} (categories {_labels(spec)}); 'between' needs a continuous "
                    f"phenotype. Use e.g. {name} in ({literal_text(spec.categories[0])}).",
                    between,
                )
            lo = self.number(lo_tree.children[0], name, spec)
            hi = self.number(hi_tree.children[0], name, spec)
            if lo > hi:
                raise self.error(
                    f"'between {literal_text(lo)} and {literal_text(hi)}' is empty: put the smaller bound first.",
                    lo_tree.children[0],
                )
            return Between(name, lo, hi)
        if rule == "isin":
            name_tree, *rest = tree.children
            negate = any(isinstance(c, Token) and c.type == "NOT" for c in rest)
            values = [c.children[0] for c in rest if isinstance(c, Tree)]
            name, spec = self.name(name_tree)
            if spec.type == "continuous":
                parsed = tuple(self.number(v, name, spec) for v in values)
            else:
                parsed = tuple(self.category(v, name, spec) for v in values)
            return In(name, parsed, negate)
        raise AssertionError(f"unhandled grammar rule {rule!r}")  # pragma: no cover - grammar and builder agree

    def name(self, tree: Tree) -> tuple[str, PhenotypeSpec]:
        token = tree.children[0]
        name = str(token)[1:-1] if token.type == "QUOTED_NAME" else str(token)
        spec = self.specs.get(name)
        if spec is None:
            raise self.error(_unknown_name(name, self.specs), token)
        return name, spec

    def number(self, token: Token, name: str, spec: PhenotypeSpec) -> float:
        if token.type != "NUMBER":
            raise self.error(
                f"{name!r} is continuous{_units(spec)}: compare it with a number, not {token}, "
                f"e.g. {name} >= 60.",
                token,
            )
        value = float(token)
        if not math.isfinite(value):
            raise self.error(f"number {token} is out of range.", token)
        return value

    def category(self, token: Token, name: str, spec: PhenotypeSpec) -> str:
        if token.type == "NUMBER":
            value = float(token)
            if not value.is_integer() or not 0 <= value < len(spec.categories):
                raise self.error(
                    f"{name!r} is {spec.type} with codes 0..{len(spec.categories) - 1} "
                    f"({_codes(spec)}); {token} is not one of them.",
                    token,
                )
            return spec.categories[int(value)]
        label = _unquote(str(token))
        found = match_category(label, spec)
        if found is None:
            raise self.error(_unknown_label(label, name, spec), token)
        return found


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    out = []
    i = 0
    while i < len(body):
        # A backslash keeps the next character literally (\" \' \\); no other escapes exist.
        if body[i] == "\\" and i + 1 < len(body):
            i += 1
        out.append(body[i])
        i += 1
    return "".join(out)


def _labels(spec: PhenotypeSpec) -> str:
    return ", ".join(map(repr, spec.categories))


def _codes(spec: PhenotypeSpec) -> str:
    return ", ".join(f"{code} = {label!r}" for code, label in enumerate(spec.categories))


def _units(spec: PhenotypeSpec) -> str:
    return f", in {spec.units}" if spec.units else ""


def match_category(label: str, spec: PhenotypeSpec) -> str | None:
    """The category of ``spec`` that ``label`` names (exactly, else ignoring case if unambiguous), or ``None``."""
    if label in spec.categories:
        return label
    folded = [c for c in spec.categories if c.casefold() == label.casefold()]
    return folded[0] if len(folded) == 1 else None


def _unknown_label(label: str, name: str, spec: PhenotypeSpec) -> str:
    lowered = {c.casefold(): c for c in spec.categories}
    close = [lowered[c] for c in difflib.get_close_matches(label.casefold(), list(lowered), n=3, cutoff=0.5)]
    close += [c for c in spec.categories if c.casefold().startswith(label.casefold()) and c not in close]
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    return f"{label!r} is not a category of {name!r} (categories {_labels(spec)}).{hint}"


def _unknown_name(name: str, specs: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(specs), n=3, cutoff=0.6)
    close += [n for n in specs if n.casefold() == name.casefold() and n not in close]
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    available = ", ".join(list(specs)[:30]) + (", ..." if len(specs) > 30 else "")
    return f"unknown phenotype {name!r}.{hint} This cohort has: {available}."


def validate_condition(condition: Condition, specs: Mapping[str, PhenotypeSpec]) -> None:
    """Check a condition (e.g. one loaded from JSON) against phenotype specs, as parsing does.

    Parameters
    ----------
    condition
        A condition, typically from :func:`condition_from_json`.
    specs
        The phenotype specs of the cohort it is meant for.

    Raises
    ------
    ConditionError
        On an unknown phenotype, a string compared with a continuous phenotype, an ordering
        or ``between`` on a category, or an unknown category label; without a position, since
        there is no text.
    """
    for name in condition.names():
        if name not in specs:
            raise ConditionError(_unknown_name(name, specs))
    stack: list[Condition] = [condition]
    while stack:
        node = stack.pop()
        if isinstance(node, (And, Or)):
            stack.extend(node.operands)
            continue
        if isinstance(node, Not):
            stack.append(node.operand)
            continue
        spec = specs[node.name]
        values = (node.lo, node.hi) if isinstance(node, Between) else (
            node.values if isinstance(node, In) else (node.value,)
        )
        if spec.type == "continuous":
            bad = [v for v in values if isinstance(v, str)]
            if bad:
                raise ConditionError(f"{node.name!r} is continuous: compare it with a number, not {bad[0]!r}.")
        else:
            if isinstance(node, Between) or (isinstance(node, Compare) and node.op not in ("==", "!=")):
                raise ConditionError(f"{node.name!r} is {spec.type}: compare it with == or != or 'in'.")
            for value in values:
                if not isinstance(value, str) or match_category(value, spec) is None:
                    raise ConditionError(_unknown_label(str(value), node.name, spec))
