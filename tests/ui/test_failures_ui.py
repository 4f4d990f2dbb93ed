"""In headless Chromium: the Failures tab searches, lists the planted slice first, and a click on it selects its subjects."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.conditions import parse_condition
from lse_panel.analysis.phenotype_filters import evaluate
from lse_panel.figures.app import frame_box, selection_count, wait_for_count
from lse_panel.testing import tiny_cohort, write_cohort_bundle

pytestmark = pytest.mark.ui

RULE = 'age >= 70 and sex == "female"'


def test_search_then_click_the_top_slice_selects_it(tmp_path, page, serve_bundle) -> None:
    cohort = tiny_cohort(20_000, seed=3)
    planted = evaluate(parse_condition(RULE, cohort.phenotype_specs), cohort.phenotype_columns, cohort.phenotype_specs)
    pred = cohort.predictions["ecg"]["lvef"].copy()
    pred[planted] += np.random.default_rng(0).normal(0, 15, planted.sum()).astype(np.float32)
    cohort.predictions["ecg"] = {**cohort.predictions["ecg"], "lvef": pred}
    bundle = write_cohort_bundle(cohort, tmp_path / "bundle")
    with serve_bundle(bundle) as (url, sessions):
        page.goto(url)
        frame_box(page, "ecg latent space")
        explorer = sessions[-1]
        assert selection_count(page) == 0
        page.locator(".bk-tab").filter(has_text="Failures").first.click()
        page.get_by_label("target", exact=True).select_option("lvef")
        page.get_by_role("button", name="Search").click()
        # Served, the search runs on a thread; the table fills when it is done. (Generous waits: the
        # first search and the first highlight in a process compile numba kernels, ~30 s on a loaded machine.)
        first = page.locator(".tabulator-row").first
        first.filter(has_text=RULE).wait_for(timeout=120_000)
        pane = explorer.failures_pane
        assert not pane.searching and pane.slices.iloc[0]["rule"] == RULE
        first.click()
        shown = wait_for_count(page, lambda n: n > 0, timeout_s=120)
        assert shown == planted.sum() == explorer.state.n_selected
        np.testing.assert_array_equal(explorer.state.selection, np.flatnonzero(planted))
        # Which latent kind fails where: the clicked slice's metrics per latent kind are shown.
        page.get_by_text("MAE difference").first.wait_for()
        assert pane.chosen == 0
