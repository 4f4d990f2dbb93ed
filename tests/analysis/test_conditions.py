"""The condition language: parsed against the phenotypes, evaluated as numpy masks (over a cohort's columns), never executed."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lse_panel.analysis.conditions import (
    And,
    Between,
    Compare,
    ConditionError,
    In,
    Not,
    Or,
    condition_from_json,
    parse_condition,
)
from lse_panel.analysis.phenotype_filters import evaluate
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.schema import PhenotypeSpec
from lse_panel.testing import tiny_cohort

SPECS = {
    "age": PhenotypeSpec("age", "continuous", "years"),
    "bmi": PhenotypeSpec("bmi", "continuous", "kg/m²"),
    "lvef": PhenotypeSpec("lvef", "continuous", "%"),
    "sex": PhenotypeSpec("sex", "categorical", categories=("female", "male")),
    "af": PhenotypeSpec("af", "binary", categories=("no", "yes")),
    "hypertension": PhenotypeSpec("hypertension", "binary", categories=("no", "yes")),
    "lv mass": PhenotypeSpec("lv mass", "continuous", "g"),
}


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    """Eight subjects with hand-picked values, including missing ones (NaN, code -1)."""
    nan = np.nan
    table = pd.DataFrame(
        {
            "age": np.array([45, 60, 61.5, 70, nan, 59.9, 80, 30], dtype=np.float32),
            "bmi": np.array([24.9, 25, 27, 30, 31, nan, 22, 28], dtype=np.float32),
            "lvef": np.array([55, 45, 60, 49.5, 65, 30, nan, 52], dtype=np.float32),
            "sex": np.array([0, 1, 0, 1, 0, -1, 1, 0], dtype=np.int8),
            "af": np.array([0, 0, 1, 1, 0, 1, -1, 0], dtype=np.int8),
            "hypertension": np.array([1, 0, 0, 1, 1, 0, 0, -1], dtype=np.int8),
            "lv mass": np.array([100, 150, 120, 180, 90, 200, 130, 110], dtype=np.float32),
        }
    )
    return Cohort.from_arrays(np.arange(8, dtype=np.int64), table, SPECS)


def _col(cohort: Cohort, name: str) -> np.ndarray:
    return np.asarray(cohort.phenotype(name))


# ----------------------------------------------------------------------------- valid input


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('age >= 60 and sex == "female"', lambda c: (_col(c, "age") >= 60) & (_col(c, "sex") == 0)),
        (
            'lvef < 50 or (af == "yes" and not hypertension == "yes")',
            lambda c: (_col(c, "lvef") < 50) | ((_col(c, "af") == 1) & (_col(c, "hypertension") == 0)),
        ),
        ("bmi between 25 and 30", lambda c: (_col(c, "bmi") >= 25) & (_col(c, "bmi") <= 30)),
        ('sex in ("female", "male")', lambda c: _col(c, "sex") >= 0),
        ("sex not in ('male')", lambda c: _col(c, "sex") == 0),
        ("age > 59.9", lambda c: _col(c, "age") > np.float32(59.9)),
        ("age == 59.9", lambda c: _col(c, "age") == np.float32(59.9)),
        ("age != 60", lambda c: (_col(c, "age") != 60) & ~np.isnan(_col(c, "age"))),
        ("lvef >= -1.5e1 AND lvef <= +49.5", lambda c: (_col(c, "lvef") >= -15) & (_col(c, "lvef") <= 49.5)),
        ("sex == 1", lambda c: _col(c, "sex") == 1),
        ('sex == "MALE"', lambda c: _col(c, "sex") == 1),
        ("`lv mass` > 125", lambda c: _col(c, "lv mass") > 125),
        ("age in (45, 70, 80)", lambda c: np.isin(_col(c, "age"), [45, 70, 80])),
        # `and` binds tighter than `or`, `not` tighter than both.
        (
            "age < 40 or age > 65 and not af == 'yes'",
            lambda c: (_col(c, "age") < 40) | ((_col(c, "age") > 65) & (_col(c, "af") == 0)),
        ),
        ("(((age > 50)))", lambda c: _col(c, "age") > 50),
        ("age > 50\n  and\tbmi < 28", lambda c: (_col(c, "age") > 50) & (_col(c, "bmi") < 28)),
    ],
)
def test_valid_conditions_match_a_hand_computed_mask(cohort: Cohort, text: str, expected) -> None:
    condition = parse_condition(text, SPECS)
    mask = evaluate(condition, cohort.phenotype_columns, cohort.phenotype_specs)
    assert mask.dtype == np.bool_ and mask.shape == (cohort.n_subjects,)
    np.testing.assert_array_equal(mask, expected(cohort))
    # Evaluating the text directly gives the same mask.
    np.testing.assert_array_equal(evaluate(text, cohort.phenotype_columns, cohort.phenotype_specs), mask)


def test_missing_values_never_match_even_under_not(cohort: Cohort) -> None:
    age_missing = np.isnan(_col(cohort, "age"))
    for text in ["age > 60", "not age > 60", "age != 1000", "not (age > 60 or sex == 'male')"]:
        assert not evaluate(text, cohort.phenotype_columns, cohort.phenotype_specs)[age_missing].any(), text
    # An `or` whose other side holds still selects a subject with one value missing.
    assert evaluate("age > 60 or bmi > 30", cohort.phenotype_columns, cohort.phenotype_specs)[age_missing].all()
    sex_missing = _col(cohort, "sex") == -1
    assert not evaluate("not sex == 'female'", cohort.phenotype_columns, cohort.phenotype_specs)[sex_missing].any()
    assert not evaluate("sex not in ('female')", cohort.phenotype_columns, cohort.phenotype_specs)[sex_missing].any()


def test_the_ast_is_frozen_dataclasses_with_labels_for_categories() -> None:
    condition = parse_condition('age >= 60 and (sex == 1 or not af in ("yes")) and bmi between 25 and 30', SPECS)
    assert condition == And(
        (
            Compare("age", ">=", 60.0),
            Or((Compare("sex", "==", "male"), Not(In("af", ("yes",))))),
            Between("bmi", 25.0, 30.0),
        )
    )
    with pytest.raises(AttributeError):
        condition.operands = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    [
        'age >= 60 and sex == "female"',
        'lvef < 50 or (af == "yes" and not hypertension == "yes")',
        "bmi between 25.5 and 30",
        "sex not in ('female', 'male')",
        "`lv mass` > -3.25 or not (age < 1 and bmi > 2)",
    ],
)
def test_json_and_text_round_trips(text: str) -> None:
    import json

    condition = parse_condition(text, SPECS)
    data = json.loads(json.dumps(condition.to_json()))
    assert condition_from_json(data) == condition
    assert type(condition).from_json(data) == condition
    assert parse_condition(condition.to_text(), SPECS) == condition


# ----------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("agee >= 60", 1, 1, ["unknown phenotype 'agee'", "did you mean 'age'"]),
        ("age > 3 and\n  bmii < 2", 2, 3, ["unknown phenotype 'bmii'", "'bmi'"]),
        ("age > 3 $ bmi", 1, 9, ["unexpected character '$'"]),
        ("age >> 3", 1, 6, ["unexpected '>'", "a number"]),
        ("(age > 3", 1, 9, ["'(' not closed", "')'"]),
        ("age > 3)", 1, 8, ["unmatched ')'"]),
        ("((age > 3) or bmi < 2))", 1, 23, ["unmatched ')'"]),
        ("sex > 3", 1, 5, ["'sex' is categorical", "no order", "=="]),
        ("sex < 'male'", 1, 5, ["no order"]),
        ('age == "old"', 1, 8, ["'age' is continuous", "number"]),
        ("sex between 0 and 1", 1, 5, ["'between' needs a continuous"]),
        ('sex == "F"', 1, 8, ["'F' is not a category of 'sex'", "did you mean 'female'"]),
        ("sex == 2", 1, 8, ["codes 0..1", "0 = 'female'"]),
        ("af == 0.5", 1, 7, ["codes 0..1"]),
        ("age between 30 and 20", 1, 13, ["put the smaller bound first"]),
        ("age = 60", 1, 5, ["'=='"]),
        ("age >= 60 and", 1, 14, ["ends too early"]),
        ('sex == "female', 1, 8, ["unterminated string"]),
        ("age > 1e999", 1, 7, ["out of range"]),
        ("age 60", 1, 5, ["a comparison"]),
        ("age in ()", 1, 9, ["unexpected ')'"]),
    ],
)
def test_invalid_conditions_say_where_and_why(text: str, line: int, column: int, words: list[str]) -> None:
    with pytest.raises(ConditionError) as info:
        parse_condition(text, SPECS)
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.line, error.column) == (line, column), str(error)
    message = str(error)
    assert message.startswith(f"line {line}, column {column}: ")
    for word in words:
        assert word.lower() in message.lower(), message
    # The offending line is quoted with a caret under the culprit.
    source_line, caret_line = message.splitlines()[-2:]
    assert caret_line.strip().startswith("^")
    assert caret_line.index("^") == column + 1  # two spaces of indent, 1-based column


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_condition(text: str) -> None:
    with pytest.raises(ConditionError, match="empty"):
        parse_condition(text, SPECS)


def test_unknown_name_lists_the_phenotypes() -> None:
    with pytest.raises(ConditionError) as info:
        parse_condition("height > 170", SPECS)
    assert "age, bmi, lvef, sex" in str(info.value)


def test_pathological_sizes_are_errors_not_crashes() -> None:
    with pytest.raises(ConditionError, match="nested more than"):
        parse_condition("not " * 500 + "age > 3", SPECS)
    with pytest.raises(ConditionError, match="limit"):
        parse_condition("age > 1 or " * 2_000 + "age > 1", SPECS)
    # Deep but redundant parentheses add no depth to the tree and are fine.
    assert parse_condition("(" * 300 + "age > 1" + ")" * 300, SPECS) == Compare("age", ">", 1.0)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('touch {marker}')",
        "age; import os; os.system('touch {marker}')",
        "age > 1 and __import__('pathlib').Path('{marker}').touch()",
        "open('{marker}', 'w')",
        "age > (lambda: __import__('os').system('touch {marker}'))()",
        "age > 1 or exec(\"open('{marker}', 'w')\")",
        "[c for c in ().__class__.__base__.__subclasses__()]",
        "age.__class__ == 1",
        "sex == \"female\" + __import__('os').system('touch {marker}')",
        "{{'a': 1}}",
        "age > 1 # comment",
    ],
)
def test_injection_attempts_are_syntax_errors_and_nothing_runs(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    calls: list[tuple] = []

    def spy(name, real):
        def record(*args, **kwargs):
            calls.append((name, args))
            return real(*args, **kwargs)

        return record

    # Record (rather than block) the ways Python code could run, so a leak shows up as a call.
    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, spy(name, getattr(builtins, name)))
    monkeypatch.setattr(os, "system", spy("os.system", lambda *a, **k: 0))
    try:
        with pytest.raises(ConditionError) as info:
            parse_condition(text.format(marker=marker), SPECS)
    finally:
        monkeypatch.undo()
    assert info.value.line is not None and info.value.column is not None
    assert info.value.reason
    assert not calls
    assert not marker.exists()


def test_stored_conditions_are_rechecked_against_another_cohort(cohort: Cohort) -> None:
    other = tiny_cohort(50)  # has age, sex, lvef... but no bmi, and no hypertension
    fits = parse_condition('age >= 60 and sex == "female"', SPECS)
    np.testing.assert_array_equal(
        evaluate(fits, other.phenotype_columns, other.phenotype_specs), (_col(other, "age") >= 60) & (_col(other, "sex") == 0)
    )
    with pytest.raises(ConditionError, match="unknown phenotype 'bmi'"):
        evaluate(parse_condition("bmi > 25", SPECS), other.phenotype_columns, other.phenotype_specs)
    with pytest.raises(ConditionError, match="not a category"):
        evaluate(condition_from_json({"kind": "compare", "name": "sex", "op": "==", "value": "other"}), other.phenotype_columns, other.phenotype_specs)
    with pytest.raises(ConditionError, match="continuous"):
        evaluate(condition_from_json({"kind": "compare", "name": "age", "op": "<", "value": "old"}), other.phenotype_columns, other.phenotype_specs)
    malformed = [
        {"kind": "call", "name": "os.system"},
        {"kind": "compare", "name": "age"},
        ["age"],
        {"kind": "and", "operands": []},
    ]
    for bad in malformed:
        with pytest.raises(ConditionError):
            condition_from_json(bad)  # type: ignore[arg-type]


def test_evaluation_is_vectorised_over_memory_mapped_columns(tmp_path: Path) -> None:
    from lse_panel.cohort.bundle import open_bundle
    from lse_panel.cohort.bundle_writer import write_bundle

    source = tiny_cohort(3_000)
    write_bundle(tmp_path / "b", ids=source.ids, phenotypes=source.phenotypes, phenotype_specs=source.phenotype_specs)
    opened = open_bundle(tmp_path / "b")
    assert isinstance(opened.phenotype("age"), np.memmap)
    text = 'age >= 60 and (sex == "female" or af == "yes") and lvef between 55 and 65'
    expected = (
        (_col(source, "age") >= 60)
        & ((_col(source, "sex") == 0) | (_col(source, "af") == 1))
        & (_col(source, "lvef") >= 55)
        & (_col(source, "lvef") <= 65)
    )
    np.testing.assert_array_equal(evaluate(text, opened.phenotype_columns, opened.phenotype_specs), expected)
