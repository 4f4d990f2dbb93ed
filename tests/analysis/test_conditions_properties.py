"""Property-based: any text or JSON given as a condition ends in a ConditionError or a condition that round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lse_panel.analysis.conditions import (
    MAX_DEPTH,
    MAX_LENGTH,
    ConditionError,
    condition_from_json,
    parse_condition,
    validate_condition,
)
from lse_panel.analysis.phenotype_filters import evaluate
from lse_panel.testing import tiny_cohort

EXAMPLES = settings.default.max_examples
COHORT = tiny_cohort(200)
SPECS = COHORT.phenotype_specs

# The language's own tokens, so random sequences reach deep into the grammar, not only its first error.
TOKENS = st.sampled_from([
    "age", "sex", "af", "lvef", "`lv mass`", "`age`", "unknown_name", "(", ")", "(", ")", ",", "and", "or", "not",
    "AND", "Not", "between", "in", "==", "!=", "<", "<=", ">", ">=", "=", "60", "-1.5e3", "1e400", "nan", "inf",
    '"female"', "'male'", '"yes"', '"unknown label"', "0", "1", "2", "-1", '"', "'", "`", "\\", "\n", "\t",
])
GRAMMARISH = st.lists(TOKENS, min_size=1, max_size=30).map(" ".join)


def assert_clear_or_round_trips(text: str) -> None:
    """A ConditionError saying what and where, or a condition equal to itself through text and JSON."""
    try:
        condition = parse_condition(text, SPECS)
    except ConditionError as exc:
        message = str(exc)
        assert message and "Traceback" not in message
        assert len(message) < 2_000 + min(len(text), 400), "the error should quote the input, not all of it"
        return
    assert parse_condition(condition.to_text(), SPECS) == condition
    restored = condition_from_json(json.loads(json.dumps(condition.to_json())))
    assert restored == condition
    validate_condition(restored, SPECS)
    mask = evaluate(condition, COHORT.phenotype_columns, SPECS)
    assert mask.dtype == bool and mask.shape == (COHORT.n_subjects,)


@settings(max_examples=EXAMPLES // 2)
@given(text=st.text(max_size=200))
def test_any_text(text: str) -> None:
    assert_clear_or_round_trips(text)


@settings(max_examples=EXAMPLES)
@given(text=GRAMMARISH)
def test_token_soup(text: str) -> None:
    assert_clear_or_round_trips(text)


@settings(max_examples=EXAMPLES // 5)
@given(depth=st.integers(1, 20_000), wrapper=st.sampled_from(["paren", "not", "mixed"]))
def test_deep_nesting(depth: int, wrapper: str) -> None:
    text = {
        "paren": "(" * depth + "age > 60" + ")" * depth,
        "not": "not " * depth + "age > 60",
        "mixed": "(not " * depth + "age > 60" + ")" * depth,
    }[wrapper]
    # Parentheses add no node to the tree; each `not` adds one.
    if len(text) > MAX_LENGTH or (wrapper != "paren" and depth > MAX_DEPTH + 1):
        with pytest.raises(ConditionError, match="characters long|nested more than"):
            parse_condition(text, SPECS)
    else:
        assert_clear_or_round_trips(text)


@settings(max_examples=EXAMPLES // 5)
@given(n=st.integers(1, 5_000), joiner=st.sampled_from([" and ", " or "]))
def test_long_flat_conditions(n: int, joiner: str) -> None:
    text = joiner.join(f"age > {i}" for i in range(n))
    if len(text) > MAX_LENGTH:
        with pytest.raises(ConditionError, match="characters long"):
            parse_condition(text, SPECS)
    else:
        assert_clear_or_round_trips(text)


@settings(max_examples=EXAMPLES // 4)
@given(name=st.text(min_size=1, max_size=60), value=st.text(max_size=60))
def test_unicode_names_and_labels(name: str, value: str) -> None:
    assume("`" not in name and "\n" not in name)
    assert_clear_or_round_trips(f"`{name}` == {json.dumps(value)}")
    assert_clear_or_round_trips(f"sex in ({json.dumps(value)}, 'male')")


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
LEAF = st.fixed_dictionaries(
    {"kind": st.sampled_from(["compare", "between", "in"]) | SCALARS,
     "name": st.sampled_from(["age", "sex", "af", "lv_mass", "nobody"]) | SCALARS},
    optional={"op": st.sampled_from(["==", "<", ">=", "!="]) | SCALARS, "value": SCALARS, "lo": SCALARS, "hi": SCALARS,
              "values": st.lists(SCALARS, max_size=4) | SCALARS, "negate": SCALARS},
)
JSON = st.recursive(
    LEAF | SCALARS,
    lambda inner: st.fixed_dictionaries({"kind": st.just("not"), "operand": inner})
    | st.fixed_dictionaries({"kind": st.sampled_from(["and", "or"]), "operands": st.lists(inner, max_size=4) | inner}),
    max_leaves=12,
)


@settings(max_examples=EXAMPLES // 2)
@given(data=JSON)
def test_stored_condition_json(data) -> None:
    """``subgroups.json`` is a file anyone with access to the bundle can edit."""
    try:
        condition = condition_from_json(data)
    except ConditionError as exc:
        assert str(exc)
        return
    assert condition_from_json(condition.to_json()) == condition
    try:
        validate_condition(condition, SPECS)
    except ConditionError:
        return
    assert evaluate(condition, COHORT.phenotype_columns, SPECS).shape == (COHORT.n_subjects,)


def test_deeply_nested_json_is_refused() -> None:
    data: dict = {"kind": "compare", "name": "age", "op": ">", "value": 1}
    for _ in range(10_000):
        data = {"kind": "not", "operand": data}
    with pytest.raises(ConditionError, match="nested"):
        condition_from_json(data)


def test_mask_matches_numpy_on_a_random_range() -> None:
    age = np.asarray(COHORT.phenotype("age"))
    lo, hi = (float(v) for v in np.nanpercentile(age, [20, 70]))
    mask = evaluate(parse_condition(f"age between {lo!r} and {hi!r}", SPECS), COHORT.phenotype_columns, SPECS)
    np.testing.assert_array_equal(mask, (age >= np.float32(lo)) & (age <= np.float32(hi)))
