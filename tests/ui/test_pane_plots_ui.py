"""The Compare pane's histograms and the Accuracy pane's predicted-vs-true plots, served: laid out and drawn."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image


pytestmark = pytest.mark.ui

PLOT_JS = """([title, exact]) => {
  const views = [];
  const walk = (v) => { views.push(v); for (const c of (v.child_views ?? [])) walk(c); };
  for (const r of Bokeh.index.roots) walk(r);
  const title_of = (v) => String(v.model.title.text);
  const matches = views.filter(v => v.frame && v.model.title
                                    && (exact ? title_of(v) === title : title_of(v).startsWith(title)));
  // The largest: the sidebar's filter histograms (260×110 px) may share a title ("sex").
  const area = (v) => v.el.offsetWidth * v.el.offsetHeight;
  const fv = matches.sort((a, b) => area(b) - area(a))[0];
  if (!fv) return null;
  fv.el.scrollIntoView({block: 'center'});
  const f = fv.frame.bbox, r = fv.canvas_view.el.getBoundingClientRect();
  const rows = fv.model.renderers.filter(g => g.data_source)
    .map(g => Object.values(g.data_source.data)[0]?.length ?? 0);
  return {x: r.x + f.left, y: r.y + f.top, width: f.width, height: f.height,
          element: [fv.el.offsetWidth, fv.el.offsetHeight], rows: rows.reduce((a, b) => a + b, 0)};
}"""
"""The largest Bokeh plot titled ``title`` (``exact``) or whose title starts with it, scrolled into view: its frame (the data
area) on the page, its element's size and how many rows its glyphs' sources hold; null if absent."""


def _drawn_plot(page, title: str, exact: bool, timeout_s: float = 60.0) -> dict:
    """Wait until the plot titled ``title`` (or ``title...``) exists with data in its glyphs; its frame once layout settled."""
    deadline = time.monotonic() + timeout_s
    while True:
        box = page.evaluate(PLOT_JS, [title, exact])
        if box is not None and box["rows"] > 0:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no plot titled {title!r} with data appeared")
        page.wait_for_timeout(250)
    page.wait_for_timeout(1500)  # layout and paint settle after the first draw
    return page.evaluate(PLOT_JS, [title, exact])


def _inked_fraction(page, box: dict) -> float:
    """Fraction of the frame's pixels (3 px in from its edges) that are not white: the drawn glyphs."""
    inset = 3
    png = page.screenshot(clip={"x": box["x"] + inset, "y": box["y"] + inset,
                                "width": box["width"] - 2 * inset, "height": box["height"] - 2 * inset})  # fmt: skip
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return float((np.abs(pixels - 255).sum(axis=2) > 30).mean())


def _assert_laid_out_and_drawn(page, title: str, *, exact: bool) -> None:
    box = _drawn_plot(page, title, exact)
    # Before the fix these frames measured 0×0 px inside 340×240 px (histograms) and 260×240 px
    # (predicted vs true) elements, and only stray axis labels were drawn.
    assert box["width"] > 0.5 * box["element"][0] and box["height"] > 0.4 * box["element"][1], (
        f"plot {title!r}: frame {box['width']}×{box['height']} px in a {box['element']} px element"
    )
    assert _inked_fraction(page, box) > 0.01, f"plot {title!r}: nothing drawn in its frame"


def test_compare_histograms_and_predicted_vs_true_are_drawn(page, served_explorer, box_select) -> None:
    url, sessions = served_explorer
    page.goto(url)
    box_select(page)
    explorer = sessions[-1]

    page.locator(".bk-tab").filter(has_text="Compare").first.click()
    compare = explorer.compare_pane
    deadline = time.monotonic() + 60
    while set(compare.distributions) != set(compare.phenotypes):  # the hidden tab catches up when shown
        assert time.monotonic() < deadline, "the Compare pane never computed its histograms"
        time.sleep(0.2)
    assert len(compare.distributions) >= 2  # more than one card: the histograms wrap side by side
    for name in compare.distributions:
        # Titled by the phenotype alone (the sidebar's filter histograms add units: "age (years)").
        _assert_laid_out_and_drawn(page, name, exact=True)

    page.locator(".bk-tab").filter(has_text="Accuracy").first.click()
    accuracy = explorer.accuracy_pane
    deadline = time.monotonic() + 60
    while accuracy._scatter_pipe is None or not accuracy._scatter_pipe.data["predictions"]:
        assert time.monotonic() < deadline, "the Accuracy pane never drew predicted against true values"
        time.sleep(0.2)
    for kind in accuracy._scatter_pipe.data["predictions"]:
        _assert_laid_out_and_drawn(page, f"{kind}: n=", exact=False)
