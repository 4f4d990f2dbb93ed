"""A subgroup saved from the explorer keeps the geometry that drew it, so the rule re-applies."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.cohort.rules import BoxStep, IdsStep, LassoStep, apply_rule
from lse_panel.components.explorer import Explorer
from lse_panel.testing import tiny_cohort, tiny_decoder


@pytest.fixture
def explorer() -> Explorer:
    return Explorer(tiny_cohort(3_000), tiny_decoder(8))


def _circle(coords: np.ndarray, radius: float = 1.5) -> np.ndarray:
    cx, cy = np.median(coords, axis=0)
    theta = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    return np.c_[cx + radius * np.cos(theta), cy + radius * np.sin(theta)]


def test_lasso_then_box_are_saved_as_geometry(explorer: Explorer) -> None:
    coords = explorer.cohort.projection("fused/umap")
    explorer.select(lasso=_circle(coords), on="fused/umap")
    x0, y0 = coords.min(axis=0)
    explorer.select(bounds=(x0, y0, x0 + 3, y0 + 3), on="fused/umap", mode="add")
    explorer.save_subgroup("drawn")
    saved = explorer.subgroups.store.get("drawn")
    assert [type(step) for step in saved.rule] == [LassoStep, BoxStep]
    assert saved.rule[1].mode == "add"
    np.testing.assert_array_equal(apply_rule(saved.rule, explorer.cohort), explorer.state.selection)


def test_mouse_lasso_records_the_polygon_and_its_mode(explorer: Explorer) -> None:
    view = explorer.latent_view.views["ecg"]
    polygon = _circle(view.coords)
    view.lasso.event(geometry=polygon)
    explorer.state.mode = "subtract"
    view.lasso.event(geometry=_circle(view.coords, radius=0.5))
    rule = explorer.state.region_rule()
    assert [(type(s), s.mode, s.projection) for s in rule] == [
        (LassoStep, "new", view.key), (LassoStep, "subtract", view.key)
    ]
    np.testing.assert_array_equal(apply_rule(rule, explorer.cohort), explorer.state.selection)


def test_selection_by_ids_is_kept_as_ids_and_new_replaces_history(explorer: Explorer) -> None:
    explorer.select(lasso=_circle(explorer.cohort.projection("fused/umap")), on="fused/umap")
    explorer.select(ids=explorer.cohort.ids[:20])
    rule = explorer.state.region_rule()
    assert len(rule) == 1 and isinstance(rule[0], IdsStep)
    explorer.clear()
    assert explorer.state.region_rule() == []
