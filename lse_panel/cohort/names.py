"""What may name a subgroup or colour it: NFKC-normalised, a safe character set, a length cap."""

from __future__ import annotations

import re
import unicodedata

from lse_panel.cohort.rules import SubgroupError

__all__ = ["MAX_NAME_LENGTH", "name_key", "stored_colour", "validate_colour", "validate_name"]

MAX_NAME_LENGTH = 80

# Names are shared with every session through the bundle and shown in HTML-rendering widgets,
# file names and messages. The panes escape them anyway (lse_panel.components.text); refusing
# the characters HTML, Markdown and paths give meaning to, and the invisible ones that make two
# names look alike (U+200B, the bidi overrides), keeps them readable everywhere else too.
_REFUSED = set('<>"=`\\/{}$')
_ALLOWED_CATEGORIES = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Nd", "Nl", "No",
                       "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "So"}  # fmt: skip
_WHY = {
    "Cf": "an invisible formatting character",
    "Cc": "a control character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Zs": "a space other than the ordinary one",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Cs": "a lone surrogate",
    "Me": "an enclosing mark",
    "Sk": "a modifier symbol",
}
_HEX = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def _describe(char: str) -> str:
    name = unicodedata.name(char, "no name")
    return f"U+{ord(char):04X} ({name})"


def validate_name(name: object) -> str:
    """``name`` NFKC-normalised and stripped, if it can name a subgroup; else :class:`SubgroupError` saying why.

    A name holds letters, marks, digits, ordinary spaces, and punctuation or symbols other than
    ``< > " = ` \\ / { } $``; invisible formatting characters (zero-width spaces, bidi overrides),
    control characters and other spaces are refused. It has 1 to 80 characters after
    normalisation (compatibility forms such as full-width letters become the plain ones first).
    """
    if not isinstance(name, str):
        raise SubgroupError(f"a subgroup name is text; got {type(name).__name__}.")
    try:
        normal = unicodedata.normalize("NFKC", name).strip(" ")
    except UnicodeError:  # pragma: no cover - lone surrogates normalise in CPython
        raise SubgroupError("the subgroup name is not valid Unicode; type it again.") from None
    if not normal:
        raise SubgroupError("a subgroup needs a name; the name is empty.")
    if len(normal) > MAX_NAME_LENGTH:
        raise SubgroupError(f"subgroup names are at most {MAX_NAME_LENGTH} characters; this one has {len(normal)}.")
    for char in normal:
        if char in "/\\":
            raise SubgroupError(f"subgroup name {normal!r} contains a path separator ({char!r}); choose another.")
        if char in _REFUSED:
            raise SubgroupError(
                f"subgroup name {normal!r} contains {char!r}, which names may not hold "
                f"(nor any of {' '.join(sorted(_REFUSED))}); choose another."
            )
        category = unicodedata.category(char)
        if char != " " and category not in _ALLOWED_CATEGORIES:
            why = _WHY.get(category, f"a character of category {category}")
            raise SubgroupError(
                f"subgroup name {normal!r} contains {_describe(char)}, {why}; remove it (names hold letters, "
                "digits, spaces and punctuation)."
            )
    return normal


def name_key(name: str) -> str:
    """How names are compared: NFKC, case-folded, stripped (``"LVH"``, ``"lvh"`` and ``"ＬＶＨ"`` are one name)."""
    return unicodedata.normalize("NFKC", name).strip().casefold()


def validate_colour(colour: object) -> str:
    """``colour`` as lower-case ``#rrggbb``; :class:`SubgroupError` unless it is ``#rgb`` or ``#rrggbb``."""
    if not isinstance(colour, str) or not _HEX.match(colour):
        raise SubgroupError(f"colour {colour!r} is not a hex colour like '#1f77b4' (or '#17b').")
    colour = colour.lower()
    if len(colour) == 4:
        colour = "#" + "".join(c * 2 for c in colour[1:])
    return colour


def stored_colour(colour: object) -> str:
    """A saved colour, or grey when the file (written by another tool, or edited) holds something else."""
    try:
        return validate_colour(colour)
    except SubgroupError:
        return "#888888"
