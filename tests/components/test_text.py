"""Text panes write stored strings as text: no raw HTML from Markdown, escaped MultiChoice labels."""

from __future__ import annotations

import html
import re
from pathlib import Path

import panel as pn

import lse_panel.components as components
from lse_panel.components.text import alert, escape_markdown, escaped_options, markdown

HOSTILE = '<img src=x onerror="alert(1)">'


def _html(pane: pn.pane.Markdown) -> str:
    """The HTML the pane sends to the browser (Panel escapes it once more for the model: undone here)."""
    return html.unescape(pane._transform_object(pane.object)["object"])


def test_markdown_and_alert_write_raw_html_as_text() -> None:
    for pane in (markdown(f"**{HOSTILE}**"), alert(HOSTILE)):
        rendered = _html(pane)
        assert "<img" not in rendered
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in rendered
    # The stock pane passes the tag through: the option is what protects.
    assert "<img" in _html(pn.pane.Markdown(HOSTILE))


def test_escape_markdown_shows_a_name_as_typed() -> None:
    name = "*[click](javascript:alert(1))* `x` <b>"
    rendered = _html(markdown(f"**{escape_markdown(name)}**"))
    assert "href" not in rendered and "<em>" not in rendered and "<code>" not in rendered
    assert "javascript:alert(1)" in rendered


def test_multichoice_labels_are_escaped_values_kept() -> None:
    options = escaped_options([HOSTILE, "plain"])
    assert options == {"&lt;img src=x onerror=&quot;alert(1)&quot;&gt;": HOSTILE, "plain": "plain"}
    widget = pn.widgets.MultiChoice(options=options, value=[HOSTILE])
    model = widget.get_root()
    assert all("<" not in label for label in model.options)
    assert widget.value == [HOSTILE]


def test_components_make_markdown_and_alert_panes_only_through_text() -> None:
    folder = Path(components.__file__).parent
    for file in folder.glob("*.py"):
        if file.name == "text.py":
            continue
        source = file.read_text()
        assert not re.search(r"pn\.pane\.(Markdown|Alert)\(", source), f"{file.name}: use lse_panel.components.text"
        assert not re.search(r"description=f['\"]", source), f"{file.name}: a widget description renders as HTML"
