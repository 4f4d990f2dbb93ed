"""Subgroup names: NFKC-normalised, a safe character set, invisible characters refused, a length cap."""

from __future__ import annotations

import pytest

from lse_panel.cohort.rules import SubgroupError
from lse_panel.cohort.subgroups import SubgroupStore, validate_name
from lse_panel.testing import tiny_cohort

MAX_NAME_LENGTH = 80

REFUSED = [
    ('<img src=x onerror="alert(1)">', "'<'"),
    ("a > b", "'>'"),
    ('say "hi"', "'\"'"),
    ("lv_mass=200", "'='"),
    ("`code`", "'`'"),
    ("a/b", "path separator ('/')"),
    ("a\\b", "path separator ('\\\\')"),
    ("{x}", "'{'"),
    ("$x$", "'$'"),
    ("high\u200bmass", "U+200B (ZERO WIDTH SPACE), an invisible formatting character"),
    ("abc\u202edcba", "U+202E (RIGHT-TO-LEFT OVERRIDE), an invisible formatting character"),
    ("\ufeffname", "U+FEFF (ZERO WIDTH NO-BREAK SPACE), an invisible formatting character"),
    ("soft\u00adhyphen", "U+00AD (SOFT HYPHEN), an invisible formatting character"),
    ("bell\x07", "a control character"),
    ("tab\there", "a control character"),
    ("two\u2028lines", "a line separator"),
    ("private\ue000", "a private-use character"),
    ("unassigned\U000e0080", "U+E0080"),
]


@pytest.mark.parametrize(("name", "why"), REFUSED)
def test_unsafe_names_are_refused_naming_the_character(name: str, why: str) -> None:
    with pytest.raises(SubgroupError) as raised:
        validate_name(name)
    assert why in str(raised.value)


@pytest.mark.parametrize("name", ["", "   ", "\u3000"])
def test_empty_names_are_refused(name: str) -> None:
    with pytest.raises(SubgroupError, match="needs a name"):
        validate_name(name)


def test_length_is_capped_after_normalisation() -> None:
    assert validate_name("x" * MAX_NAME_LENGTH) == "x" * MAX_NAME_LENGTH
    with pytest.raises(SubgroupError, match=f"at most {MAX_NAME_LENGTH} characters; this one has {MAX_NAME_LENGTH + 1}"):
        validate_name("x" * (MAX_NAME_LENGTH + 1))
    # U+FDFA is one character that NFKC spells out in 18.
    with pytest.raises(SubgroupError, match="this one has 90"):
        validate_name("\ufdfa" * 5)


@pytest.mark.parametrize(
    ("typed", "saved"),
    [
        ("ＬＶＨ　ｇｒｏｕｐ", "LVH group"),  # full-width letters and space
        ("a\u00a0b", "a b"),  # no-break space
        ("ﬁbrosis", "fibrosis"),  # ligature
        ("  O'Brien & co (2024) #1: high LV-mass, 50%+ ", "O'Brien & co (2024) #1: high LV-mass, 50%+"),
        ("Élodie café ±2 °C", "Élodie café ±2 °C"),
        ("心臓 高リスク", "心臓 高リスク"),
        ("❤ group", "❤ group"),
    ],
)
def test_safe_names_are_kept_normalised(typed: str, saved: str) -> None:
    assert validate_name(typed) == saved


def test_not_text_is_refused() -> None:
    with pytest.raises(SubgroupError, match="is text; got int"):
        validate_name(3)  # type: ignore[arg-type]


def test_store_refuses_a_hostile_name_and_keeps_nothing(tmp_path) -> None:
    store = SubgroupStore(tiny_cohort(200))
    with pytest.raises(SubgroupError, match="contains '<'"):
        store.save("<svg onload=alert(1)>", [1, 2, 3])
    with pytest.raises(SubgroupError, match="U\\+200B"):
        store.save("ok\u200b", [1, 2, 3])
    assert store.names() == []
    store.save("fine", [1, 2, 3])
    with pytest.raises(SubgroupError, match="contains '<'"):
        store.rename("fine", "<b>bold</b>")
    assert store.names() == ["fine"]


def test_compatibility_forms_name_the_same_subgroup() -> None:
    store = SubgroupStore(tiny_cohort(200))
    store.save("ＬＶＨ", [1, 2])
    assert store.names() == ["LVH"]
    with pytest.raises(SubgroupError, match="already exists"):
        store.save("lvh", [3])
    assert store.get("ｌｖｈ").n == 2
