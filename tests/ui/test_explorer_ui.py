"""The explorer in headless Chromium: a mouse lasso selects, every pane follows, both latent views highlight."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from lse_panel.analysis.selection import ray_casting_mask_reference
from lse_panel.figures.app import (
    densest_point,
    frame_box,
    lasso,
    select_tool,
    selection_count,
    serve_app,
    to_screen,
    wait_for_count,
)
from lse_panel.testing import free_port, write_cohort_bundle

pytestmark = pytest.mark.ui


def _wait(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        time.sleep(0.1)


def _loop(box, centre, radius_px: float, n: int = 36):
    cx, cy = to_screen(box, *centre)
    return [(cx + radius_px * np.cos(t), cy + radius_px * np.sin(t)) for t in np.linspace(0, 2 * np.pi, n)]


def test_mouse_lasso_updates_count_and_panes(page, served_explorer, ui_cohort) -> None:
    url, sessions = served_explorer
    page.goto(url)
    box = frame_box(page, "ecg latent space")
    frame_box(page, "mri latent space")
    explorer = sessions[-1]
    assert selection_count(page) == 0
    select_tool(page, 0, "lasso-select")
    coords = ui_cohort.projection("ecg/umap")
    lasso(page, _loop(box, densest_point(coords), 0.1 * min(box["width"], box["height"])))
    try:
        shown = wait_for_count(page, lambda n: n > 0)
    except TimeoutError:
        page.screenshot(path="/tmp/ui_fail.png")
        raise
    state = explorer.state
    # The page shows the exact selection the server computed from the drawn polygon.
    geometry = np.asarray(explorer.latent_view.views["ecg"].lasso.geometry)
    expected = np.flatnonzero(ray_casting_mask_reference(coords[:, 0], coords[:, 1], geometry[:, 0], geometry[:, 1]))
    np.testing.assert_array_equal(state.selection, expected)
    assert shown == expected.size
    # Decode and accuracy panes recomputed for this selection.
    _wait(lambda: "selection" in explorer.decode_pane.decoded)
    page.get_by_text(re.compile(rf"Selection\W+{expected.size:,} subjects")).first.wait_for()
    # Served, hidden tabs catch up when shown (only the visible pane recomputes on a lasso).
    page.locator(".bk-tab").filter(has_text="Accuracy").first.click()
    _wait(lambda: explorer.accuracy_pane.metrics is not None)
    assert "selection" in set(explorer.accuracy_pane.metrics["group"])


def test_page_renders_every_tab_without_script_errors(page, served_explorer) -> None:
    url, sessions = served_explorer
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    frame_box(page, "ecg latent space")
    tabs = page.locator(".bk-tab")
    tabs.first.wait_for()
    names = [tabs.nth(i).inner_text().strip() for i in range(tabs.count())]
    # The Explorer's tabs, then the accuracy pane's own views (its forest plots, the change, the table),
    # which stay hidden until there are results to show.
    explorer_tabs = ["Decode", "Accuracy", "Compare", "Failures", "Perturb", "Interpolate", "Subgroups", "Subject"]
    accuracy_views = ["Intervals", "Change vs cohort", "Table"]
    assert names == explorer_tabs + accuracy_views
    for i in range(len(explorer_tabs)):
        tabs.nth(i).click()
        time.sleep(0.5)
    assert errors == []  # one bad payload (an empty path) once blanked the whole page


def test_ecg_selection_is_highlighted_in_mri_view(page, served_explorer, ui_cohort, box_select) -> None:
    url, sessions = served_explorer
    page.goto(url)
    box_select(page)
    explorer = sessions[-1]
    n = selection_count(page)
    assert n == explorer.state.n_selected
    page.mouse.move(2, 2)
    mri = explorer.latent_view.views["mri"]
    selected = explorer.state.selection
    np.testing.assert_array_equal(mri.pipe.data["x"].to_numpy(), ui_cohort.projection("mri/umap")[selected, 0])
    # In the page: the MRI plot's highlight raster (its second image) has non-empty pixels.
    page.wait_for_function(
        """() => {
            const views = [];
            const walk = (v) => { views.push(v); for (const c of (v.child_views ?? [])) walk(c); };
            for (const r of Bokeh.index.roots) walk(r);
            const fig = views.find(v => v.model.title && String(v.model.title.text).startsWith('mri latent space'));
            if (!fig) return false;
            const images = fig.model.renderers.filter(r => r.glyph && r.glyph.type === 'Image');
            if (images.length < 2) return false;
            const img = images[1].data_source.data.image[0];
            let total = 0;
            for (let i = 0; i < img.length; i++) { if (img[i] > 0) total += 1; }
            return total > 0;
        }""",
        timeout=30_000,
    )


def test_served_app_script_answers(tmp_path, browser, ui_cohort) -> None:
    """`panel serve apps/explorer.py --setup apps/setup.py --args BUNDLE` loads the bundle and draws both views."""
    bundle = write_cohort_bundle(ui_cohort, tmp_path / "bundle")
    port = free_port()
    proc = serve_app(bundle, port, timeout=90)
    try:
        context = browser.new_context(viewport={"width": 1600, "height": 1200})
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/explorer", timeout=60_000)
        frame_box(page, "ecg latent space")
        frame_box(page, "mri latent space")
        assert selection_count(page) == 0
        context.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
