"""In headless Chromium: hostile subgroup names and conditions stored in a bundle run no script in any pane.

The names are written straight into ``subgroups.json``, past :func:`validate_name`, as an old
lse-panel or a foreign tool could have written them; every tab is opened, the hostile subgroups
are selected, compared and made the comparison group, and the page must never run their scripts.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from lse_panel.cohort.bundle import open_bundle
from lse_panel.cohort.subgroups import STORE_FILE, SubgroupStore
from lse_panel.figures.app import frame_box, to_screen
from lse_panel.testing import tiny_cohort, write_cohort_bundle

pytestmark = pytest.mark.ui

TITLE_PROBE = "document.title='XSS'"


def _payload(k: int) -> str:
    """Script that, if it ever runs, sets ``window.__lse_xss`` to ``k`` and changes the page title."""
    return f"window.__lse_xss={k};{TITLE_PROBE}"


HOSTILE_NAMES = [
    f'<img src=x onerror="{_payload(1)}">',
    f"<svg onload={_payload(2)}>",
    f'"><script>{_payload(3)}</script>',
    f"[click](javascript:{_payload(4)})",
    f"<iframe srcdoc='<script>parent.{_payload(5)}</script>'>",
    f"<details open ontoggle={_payload(6)}>",
]
HOSTILE_CONDITION_TEXT = f'age > 50 and "<img src=x onerror={_payload(7)}>"'


@pytest.fixture
def hostile_bundle(tmp_path):
    """A 5,000-subject bundle whose saved subgroups carry hostile names and condition text, written past validation."""
    return write_hostile_bundle(tmp_path / "bundle")


def write_hostile_bundle(path):
    """Write the bundle of :func:`hostile_bundle` at ``path``."""
    bundle = write_cohort_bundle(tiny_cohort(5_000), path)
    store = SubgroupStore(open_bundle(bundle))
    rng = np.random.default_rng(0)
    for k in range(len(HOSTILE_NAMES)):
        store.save(f"placeholder {k}", np.sort(rng.choice(5_000, size=400 + 50 * k, replace=False)))
    store.save_condition("placeholder condition", "age > 50")
    listing = json.loads((bundle / STORE_FILE).read_text())
    for entry, name in zip(listing["subgroups"], [*HOSTILE_NAMES, f"<b onmouseover={_payload(8)}>cond</b>"]):
        entry["name"] = name
    for step in listing["subgroups"][-1]["rule"]:
        step["text"] = HOSTILE_CONDITION_TEXT
    (bundle / STORE_FILE).write_text(json.dumps(listing))
    # Phenotype labels as a foreign bundle could declare them: units, descriptions, category labels.
    manifest = json.loads((bundle / "manifest.json").read_text())
    phenotypes = manifest["phenotypes"]
    phenotypes["lv_mass"].update(units=f"<img src=x onerror={_payload(9)}>", description=f"<svg onload={_payload(10)}>")
    phenotypes["sex"]["categories"] = [f"<img src=y onerror={_payload(11)}>", "male"]
    phenotypes["af"]["description"] = f"[af](javascript:{_payload(12)})"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


WATCH_JS = """() => {
  window.__lse_dialogs = 0;
  for (const name of ['alert', 'confirm', 'prompt']) window[name] = () => { window.__lse_dialogs += 1; };
}"""


def _assert_no_script_ran(page, title: str, dialogs: list[str]) -> None:
    assert page.evaluate("() => window.__lse_xss === undefined"), "a hostile name's script ran"
    assert page.title() == title
    assert dialogs == []


EXPLORER_TABS = ("Decode", "Accuracy", "Compare", "Failures", "Perturb", "Interpolate", "Subgroups", "Subject")
ACCURACY_VIEWS = ("Change vs cohort", "Table", "Intervals")


def _open_tab(page, name: str) -> None:
    page.locator(".bk-tab:visible").filter(has_text=name).first.click()
    page.wait_for_timeout(500)


def _tabs(page) -> list[str]:
    """The explorer's tabs shown (not the tabs inside a pane)."""
    return [tab for tab in page.locator(".bk-tab").all_inner_texts() if tab in EXPLORER_TABS]


def _visit_every_tab(page, tabs: list[str], title: str, dialogs: list[str]) -> None:
    for tab in tabs:
        _open_tab(page, tab)
        _assert_no_script_ran(page, title, dialogs)
        if tab == "Accuracy":
            for view in ACCURACY_VIEWS:
                if page.locator(".bk-tab:visible").filter(has_text=view).count():
                    _open_tab(page, view)
                    _assert_no_script_ran(page, title, dialogs)


def test_hostile_names_run_no_script(page, hostile_bundle, serve_bundle) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    # Full mode: every pane, the Subject tab and the download buttons included.
    with serve_bundle(hostile_bundle, privacy="full") as (url, sessions):
        page.goto(url)
        frame_box(page, "ecg latent space")
        title = page.title()
        assert "XSS" not in title
        explorer = sessions[-1]
        names = explorer.subgroup_names
        assert len(names) == len(HOSTILE_NAMES) + 1

        tabs = _tabs(page)
        assert "Subgroups" in tabs and "Compare" in tabs and "Subject" in tabs
        _visit_every_tab(page, tabs, title, dialogs)

        # Every hostile subgroup: shown on the maps, selected, and made the comparison group.
        _open_tab(page, "Subgroups")
        for button in page.get_by_role("button", name="select").all():
            button.click()
            page.wait_for_timeout(300)
        # The last row's name is shown in the status line as text, tags and all.
        page.get_by_text("Selected the").filter(has_text="<b onmouseover=").first.wait_for()
        for box in page.get_by_role("checkbox", name="show").all():
            box.check()
        compare_buttons = page.locator("button").filter(has_text=re.compile(r"^compare(d| with)$"))
        for k in range(compare_buttons.count()):
            compare_buttons.nth(k).click()
            page.wait_for_timeout(300)
        _assert_no_script_ran(page, title, dialogs)
        # The Compare pane's MultiChoice: open it and pick every hostile name.
        _open_tab(page, "Compare")
        choice = page.get_by_placeholder("add subgroups to compare")
        for _ in names:
            choice.click()
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Enter")
            page.wait_for_timeout(200)
        _assert_no_script_ran(page, title, dialogs)
        # The chosen names are listed as text in the MultiChoice, not as elements.
        page.locator(".choices__item").filter(has_text="<svg onload=").first.wait_for()
        _visit_every_tab(page, tabs, title, dialogs)
        # Interpolate between two hostile subgroups: their names reach the step labels and card titles.
        _open_tab(page, "Interpolate")
        page.get_by_role("button", name="two saved subgroups").click()
        endpoints = page.locator("select:visible").filter(has=page.locator("option", has_text="onerror"))
        endpoints.nth(endpoints.count() - 2).select_option(label=HOSTILE_NAMES[0])
        endpoints.nth(endpoints.count() - 1).select_option(label=HOSTILE_NAMES[2])
        page.get_by_text("on the straight line").first.wait_for(timeout=60_000)
        page.wait_for_timeout(2_000)  # the cards, titled with the step labels, follow the header
        _assert_no_script_ran(page, title, dialogs)
        # Colour a map by the phenotype with hostile units and hover over it (the colour bar and tooltip labels).
        colour_by = page.locator("select:visible").filter(has=page.locator("option", has_text="lv_mass"))
        colour_by.first.select_option(label="lv_mass")
        page.wait_for_timeout(3_000)
        box = frame_box(page, "ecg latent space")
        (x0, x1), (y0, y1) = box["x_range"], box["y_range"]
        for fx in np.linspace(0.1, 0.9, 9):
            for fy in np.linspace(0.1, 0.9, 5):
                page.mouse.move(*to_screen(box, x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)))
                page.wait_for_timeout(50)
        _assert_no_script_ran(page, title, dialogs)


def test_aggregate_mode_is_named_in_the_page_and_runs_no_script(page, hostile_bundle, serve_bundle) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with serve_bundle(hostile_bundle) as (url, sessions):  # not synthetic: aggregate by default
        page.goto(url)
        frame_box(page, "ecg latent space")
        page.get_by_text("privacy: aggregate").first.wait_for()
        title = page.title()
        tabs = _tabs(page)
        assert "Subject" not in tabs and "Subgroups" in tabs
        _visit_every_tab(page, tabs, title, dialogs)
        _open_tab(page, "Subgroups")
        assert page.get_by_role("button", name="⬇").count() == 0  # no id export
