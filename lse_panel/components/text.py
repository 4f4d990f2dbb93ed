"""Text panes that never render stored or typed strings as HTML, and the escaping every pane uses."""

from __future__ import annotations

import html
import re
from typing import Any, Iterable

import panel as pn

__all__ = ["alert", "escape_html", "escape_markdown", "escaped_options", "markdown"]

# Subgroup names, conditions and phenotype labels come from users and from bundles other tools
# (or an older lse-panel) wrote: a name like ``<img src=x onerror=...>`` must show as text. Panel's
# Markdown (and Alert) panes render through markdown-it's "gfm-like" preset, which passes raw HTML
# through; with ``html`` off, markdown-it writes any tag as text, and its link check already refuses
# ``javascript:`` URLs. Every Markdown or Alert pane in the components is made here.
_NO_RAW_HTML = {"html": False}

# What makes Markdown out of text inside a line: emphasis, code, links and images (``[``), raw
# HTML and entities, tables, strikethrough. Line-start marks (``#``, ``-``) cannot start a line in
# the one-line messages the panes write, so names keep their hyphens and full stops as typed.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>&|~$])")


def markdown(object: str = "", **params: Any) -> pn.pane.Markdown:
    """A Markdown pane that writes any raw HTML in ``object`` as text (see the note above)."""
    return pn.pane.Markdown(object, renderer_options=dict(_NO_RAW_HTML), **params)


def alert(object: str = "", **params: Any) -> pn.pane.Alert:
    """An Alert pane that writes any raw HTML in ``object`` as text."""
    return pn.pane.Alert(object, renderer_options=dict(_NO_RAW_HTML), **params)


def escape_markdown(text: object) -> str:
    """``text`` as literal Markdown inside a line: the marks Markdown reads there are backslash-escaped.

    For a user string put inside Markdown we write (``f"**{name}**"``), so ``*``, ``[...](...)``
    or a backtick in a subgroup name shows as typed instead of changing the formatting.
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def escape_html(text: object) -> str:
    """``text`` for an HTML pane or an HTML-rendering widget: ``& < > " '`` as entities."""
    return html.escape(str(text), quote=True)


def escaped_options(values: Iterable[str]) -> dict[str, str]:
    """Options for a ``MultiChoice`` (Bokeh renders its labels with Choices.js as HTML): ``{escaped: value}``."""
    return {escape_html(value): value for value in values}
