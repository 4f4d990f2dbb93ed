"""Latent views driven by stream events in Python: exact selections, modes, linking, filters, clicks."""

from __future__ import annotations

import numpy as np
import param
import panel as pn
import pytest

from lse_panel.analysis.selection import ray_casting_mask_reference
from lse_panel.components.filters import PhenotypeFilters
from lse_panel.components.latent_view import LatentPair, LatentView
from lse_panel.components.state import ExplorerState
from lse_panel.testing import tiny_cohort


@pytest.fixture(scope="module")
def cohort():
    return tiny_cohort(3_000)


@pytest.fixture
def pair(cohort):
    return LatentPair(ExplorerState(cohort))


def _box_reference(coords, x0, y0, x1, y1):
    x, y = coords[:, 0], coords[:, 1]
    return np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))


def _lasso_reference(coords, poly):
    return np.flatnonzero(ray_casting_mask_reference(coords[:, 0], coords[:, 1], poly[:, 0], poly[:, 1]))


def test_pair_shows_one_view_per_modality(pair) -> None:
    assert list(pair.views) == ["ecg", "mri"]
    assert all(view.method == "umap" for view in pair.views.values())


def test_box_event_selects_exactly(pair, cohort) -> None:
    view = pair.views["ecg"]
    view.box.event(bounds=(2.0, 2.0, -20.0, -20.0))  # corners in any order
    expected = _box_reference(cohort.projection("ecg/umap"), -20, -20, 2, 2)
    assert expected.size > 0
    np.testing.assert_array_equal(pair.state.selection, expected)


@pytest.mark.parametrize("seed", range(4))
def test_lasso_event_matches_brute_force(pair, cohort, seed) -> None:
    rng = np.random.default_rng(seed)
    # A random star-shaped (concave) polygon with 40 vertices around a random centre.
    t = np.sort(rng.uniform(0, 2 * np.pi, 40))
    r = rng.uniform(3, 12, 40)
    centre = rng.uniform(-5, 5, 2)
    poly = np.c_[centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)]
    pair.views["mri"].lasso.event(geometry=poly)
    np.testing.assert_array_equal(pair.state.selection, _lasso_reference(cohort.projection("mri/umap"), poly))


def test_modes_combine_regions(pair, cohort) -> None:
    coords = cohort.projection("ecg/umap")
    view, state = pair.views["ecg"], pair.state
    left = (-20.0, -20.0, 0.0, 20.0)
    bottom = (-20.0, -20.0, 20.0, 0.0)
    a, b = _box_reference(coords, *left), _box_reference(coords, *bottom)
    view.box.event(bounds=left)
    state.mode = "add"
    view.box.event(bounds=bottom)
    np.testing.assert_array_equal(state.selection, np.union1d(a, b))
    state.mode = "intersect"
    view.box.event(bounds=left)
    np.testing.assert_array_equal(state.selection, a)
    state.mode = "subtract"
    view.box.event(bounds=bottom)
    np.testing.assert_array_equal(state.selection, np.setdiff1d(a, b))


def test_empty_and_full_selections(pair, cohort) -> None:
    view, state = pair.views["ecg"], pair.state
    view.box.event(bounds=(100.0, 100.0, 101.0, 101.0))
    assert state.n_selected == 0
    assert len(pair.views["mri"].pipe.data) == 0
    view.lasso.event(geometry=np.array([[-50, -50], [50, -50], [50, 50], [-50, 50]], dtype=float))
    np.testing.assert_array_equal(state.selection, np.arange(cohort.n_subjects))
    assert state.comparison_indices().size == 0
    # A click-sized lasso (fewer than three vertices) changes nothing.
    view.lasso.event(geometry=np.array([[0.0, 0.0], [0.1, 0.1]]))
    assert state.n_selected == cohort.n_subjects


def test_views_highlight_each_others_selection(pair, cohort) -> None:
    ecg, mri = pair.views["ecg"], pair.views["mri"]
    ecg.box.event(bounds=(0.0, 0.0, 20.0, 20.0))
    selected = pair.state.selection
    assert selected.size > 0
    mri_coords = cohort.projection("mri/umap")
    np.testing.assert_array_equal(mri.pipe.data["x"].to_numpy(), mri_coords[selected, 0])
    np.testing.assert_array_equal(ecg.pipe.data["y"].to_numpy(), cohort.projection("ecg/umap")[selected, 1])
    # And the other view's highlight raster draws them (spread, so counted more than once), then nothing.
    assert np.nansum(mri.plot[()].get(1).dimension_values(2)) >= selected.size
    pair.state.clear()
    assert np.nansum(mri.plot[()].get(1).dimension_values(2)) == 0


def test_sessions_highlight_their_own_selection(cohort) -> None:
    # Two sessions on one cohort share the point frames, never a selection or a highlight.
    first, second = LatentPair(ExplorerState(cohort)), LatentPair(ExplorerState(cohort))
    first.views["ecg"].box.event(bounds=(0.0, 0.0, 20.0, 20.0))
    assert first.state.n_selected > 0 and second.state.n_selected == 0
    assert len(first.views["mri"].pipe.data) == first.state.n_selected
    assert len(second.views["mri"].pipe.data) == 0
    assert np.nansum(second.views["mri"].plot[()].get(1).dimension_values(2)) == 0
    assert first.views["ecg"].backend.points("ecg/umap") is second.views["ecg"].backend.points("ecg/umap")


def test_changing_colour_or_projection_keeps_streams_working(pair, cohort) -> None:
    view = pair.views["ecg"]
    lasso = view.lasso
    pair.color_by = "sex"
    pair.method = "pca"
    assert view.lasso is lasso and view.key == "ecg/pca"
    poly = np.array([[-30, -30], [0, -30], [0, 30], [-30, 30]], dtype=float)
    view.lasso.event(geometry=poly)
    np.testing.assert_array_equal(pair.state.selection, _lasso_reference(cohort.projection("ecg/pca"), poly))
    view.kind = "fused"
    assert view.key == "fused/pca"
    assert pair.views["mri"].key == "mri/pca"


def test_tap_inspects_the_nearest_subject(pair, cohort) -> None:
    coords = cohort.projection("ecg/umap")
    target = 123
    pair.views["ecg"].tap.event(x=float(coords[target, 0]) + 1e-4, y=float(coords[target, 1]))
    d = np.hypot(coords[:, 0] - coords[target, 0], coords[:, 1] - coords[target, 1])
    assert d[pair.state.inspected] == d.min()


def test_filters_restrict_the_region(pair, cohort) -> None:
    state = pair.state
    filters = PhenotypeFilters(state, shown=["age", "sex"])
    age, sex = cohort.phenotype("age"), cohort.phenotype("sex")
    state.filters = {"age": (55.0, None), "sex": (1,)}
    np.testing.assert_array_equal(state.selection, np.flatnonzero((age >= 55) & (sex == 1)))
    pair.views["ecg"].box.event(bounds=(0.0, 0.0, 20.0, 20.0))
    region = _box_reference(cohort.projection("ecg/umap"), 0, 0, 20, 20)
    np.testing.assert_array_equal(state.selection, region[(age[region] >= 55) & (sex[region] == 1)])
    # Widgets follow the state, and histograms the selection.
    assert filters._widgets["sex"].value == [1]
    counts = filters._pipes["sex"].data
    assert counts[0] == 0 and counts[1] == state.n_selected
    state.clear()
    assert state.n_selected == 0 and state.filters == {}
    assert filters._widgets["sex"].value == [0, 1]
    assert filters._widgets["age"].value == (filters._widgets["age"].start, filters._widgets["age"].end)


def test_filter_widget_writes_state(pair, cohort) -> None:
    filters = PhenotypeFilters(pair.state, shown=["age", "af"])
    slider = filters._widgets["age"]
    with param.edit_constant(slider):
        slider.value_throttled = (60.0, slider.end)
    assert pair.state.filters == {"age": (60.0, None)}
    filters._widgets["af"].value = [1]
    assert pair.state.filters["af"] == (1,)
    expected = np.flatnonzero((cohort.phenotype("age") >= 60) & (cohort.phenotype("af") == 1))
    np.testing.assert_array_equal(pair.state.selection, expected)


def test_views_render(pair) -> None:
    pn.panel(pair).get_root()
    pn.panel(LatentView(pair.state, kind="fused")).get_root()
