"""In headless Chromium: a subgroup saved in the page is persisted in the bundle and listed again after a reload."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import numpy as np
import pytest

from lse_panel.cohort.bundle import open_bundle
from lse_panel.cohort.subgroups import SubgroupStore
from lse_panel.components.explorer import Explorer
from lse_panel.figures.app import (
    drag_box,
    frame_box,
    select_tool,
    to_screen,
    wait_for_count,
)
from lse_panel.testing import tiny_cohort, write_cohort_bundle

pytestmark = pytest.mark.ui

NAME = "ui saved group"


@pytest.fixture
def served_bundle(tmp_path, serve_bundle) -> Iterator[tuple[str, object, list[Explorer]]]:
    """An explorer on a bundle on disk (so subgroups persist), served in-process: (url, bundle path, sessions)."""
    bundle = write_cohort_bundle(tiny_cohort(5_000), tmp_path / "bundle")
    with serve_bundle(bundle) as (url, sessions):
        yield url, bundle, sessions


def _box_drag(page, box) -> None:
    """Drag a box over the upper-right quarter of the plot frame ``box`` (the box-select tool must be active)."""
    (x0, x1), (y0, y1) = box["x_range"], box["y_range"]
    start = to_screen(box, x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0))
    end = to_screen(box, x1 - 0.01 * (x1 - x0), y1 - 0.01 * (y1 - y0))
    drag_box(page, start, end)


def _open_tab(page, name: str) -> None:
    page.locator(".bk-tab").filter(has_text=name).first.click()


LISTED_JS = """(name) => {
  // The listed subgroup's name is the value of its rename box (a text input, not page text),
  // possibly inside shadow roots: walk them all.
  const found = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'INPUT' && el.value === name) found.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return found.some(el => el.getClientRects().length > 0);
}"""


def test_saved_subgroup_is_listed_after_reload(page, served_bundle) -> None:
    url, bundle, sessions = served_bundle
    page.goto(url)
    box = frame_box(page, "ecg latent space")
    frame_box(page, "mri latent space")
    explorer = sessions[-1]
    assert explorer.subgroup_names == []

    # Select with the mouse: a box drag on the ECG latent view.
    select_tool(page, 0, "box-select")
    _box_drag(page, box)
    n = wait_for_count(page, lambda n: n > 0)
    assert n == explorer.state.n_selected
    selected = explorer.state.selection.copy()

    # Subgroups tab: type a name, press Save selection.
    _open_tab(page, "Subgroups")
    name_box = page.get_by_placeholder("e.g. high LV mass")
    name_box.wait_for()
    name_box.fill(NAME)
    name_box.press("Enter")  # a Panel TextInput sends its value on change (Enter or blur)
    deadline = time.monotonic() + 30  # generous: on a loaded 2-core machine this round trip took over 10 s
    while explorer.subgroups._name.value != NAME:
        assert time.monotonic() < deadline, "the typed name never reached the server"
        page.wait_for_timeout(100)
    page.get_by_role("button", name="Save selection").click()
    page.get_by_text(re.compile(rf"Saved '{NAME}' \({n:,} subjects\)")).first.wait_for()

    # On disk, in a store that knows nothing of the served session.
    disk = SubgroupStore(open_bundle(bundle))
    assert disk.names() == [NAME]
    assert disk.get(NAME).n == n
    np.testing.assert_array_equal(disk.members(NAME), selected)

    # Reload: a fresh session (a new Explorer) reads the subgroup back from the bundle.
    before = len(sessions)
    page.reload()
    frame_box(page, "ecg latent space")
    assert len(sessions) == before + 1
    fresh = sessions[-1]
    assert fresh is not explorer
    assert fresh.subgroup_names == [NAME]
    assert selection_is_empty(page)
    _open_tab(page, "Subgroups")
    page.wait_for_function(LISTED_JS, arg=NAME, timeout=30_000)
    page.get_by_text(f"n = {n:,}").first.wait_for()
    assert "No saved subgroups yet" not in page.content()

    # And once more from disk, after the reload: same name, same member count, same members.
    disk = SubgroupStore(open_bundle(bundle))
    assert disk.names() == [NAME]
    assert disk.get(NAME).n == n
    np.testing.assert_array_equal(disk.members(NAME), selected)


def selection_is_empty(page) -> bool:
    return wait_for_count(page, lambda n: n == 0, timeout_s=10) == 0
