"""The Explorer composition: selection from Python, ids and phenotypes out, bundles, serving helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn
import pytest

from lse_panel.analysis.selection import ray_casting_mask_reference
from lse_panel.components.explorer import Explorer, bundle_from_argv, cached_cohort, warm_up
from lse_panel.components.subject import SubjectInspector, subject_phenotypes
from lse_panel.figures.app import write_cohort_bundle
from lse_panel.testing import tiny_cohort, tiny_decoder


@pytest.fixture(scope="module")
def cohort():
    return tiny_cohort(1_500)


@pytest.fixture
def explorer(cohort):
    return Explorer(cohort, tiny_decoder(8))


@pytest.fixture(scope="module")
def bundle(cohort, tmp_path_factory):
    return write_cohort_bundle(cohort, tmp_path_factory.mktemp("bundle") / "tiny")


def test_select_by_ids_updates_every_view(explorer, cohort) -> None:
    ids = cohort.ids[[40, 7, 900]]
    rows = explorer.select(ids=ids)
    np.testing.assert_array_equal(rows, [7, 40, 900])
    np.testing.assert_array_equal(explorer.selected_ids, cohort.ids[[7, 40, 900]])
    for view in explorer.latent_view.views.values():
        assert len(view.pipe.data) == 3
    counts = explorer.filters._pipes["sex"].data
    assert counts.sum() == 3


def test_select_unknown_id_raises(explorer) -> None:
    with pytest.raises(KeyError, match="not in this cohort"):
        explorer.select(ids=[-1])


def test_select_by_geometry_on_any_projection(explorer, cohort) -> None:
    coords = cohort.projection("fused/umap")
    explorer.select(bounds=(0, 0, 20, 20))
    x, y = coords[:, 0], coords[:, 1]
    np.testing.assert_array_equal(explorer.selected_indices, np.flatnonzero((x >= 0) & (y >= 0)))
    poly = np.array([[-20, -20], [5, -20], [-20, 5]], dtype=float)
    explorer.select(lasso=poly, on="ecg/pca")
    pca = cohort.projection("ecg/pca")
    expected = np.flatnonzero(ray_casting_mask_reference(pca[:, 0], pca[:, 1], poly[:, 0], poly[:, 1]))
    np.testing.assert_array_equal(explorer.selected_indices, expected)
    explorer.select(indices=[1, 2], mode="add")
    assert {1, 2} <= set(explorer.selected_indices.tolist())
    with pytest.raises(ValueError, match="exactly one"):
        explorer.select(ids=[1], indices=[1])


def test_selected_phenotypes_frame(explorer, cohort) -> None:
    explorer.select(indices=[3, 5])
    frame = explorer.selected_phenotypes
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == list(cohort.ids[[3, 5]])
    assert frame["age"].tolist() == cohort.phenotype("age")[[3, 5]].tolist()
    explorer.clear()
    assert explorer.selected_phenotypes.empty


def test_individual_level_off_hides_ids_and_inspector(cohort) -> None:
    explorer = Explorer(cohort, None, individual_level=False)
    explorer.select(indices=[1])
    with pytest.raises(PermissionError):
        explorer.selected_ids
    assert not any(getattr(tab, "__class__", None) is SubjectInspector for tab in explorer.main_panes()[-1])


def test_layouts_render(explorer) -> None:
    pn.panel(explorer).get_root()
    assert isinstance(explorer.servable_template(), pn.template.BaseTemplate)
    for pane in (explorer.latent_view, explorer.decode_pane, explorer.accuracy_pane, explorer.filters):
        pn.panel(pane).get_root()


def test_subject_inspector_shows_original_and_reconstruction(explorer, cohort) -> None:
    explorer.state.inspected = 11
    body = explorer.subject._body
    assert "Subject" in body[0].object
    records = explorer.subject.records(11)
    assert set(records) == {"ecg", "mri"}
    assert records["ecg"]["reconstruction"].shape == cohort.modalities["ecg"].shape
    table = subject_phenotypes(explorer.state, 11)
    assert table.loc[table.phenotype == "sex", "value"].item() in ("female", "male")
    pn.panel(explorer.subject).get_root()


def test_from_bundle_without_a_model(bundle, cohort) -> None:
    explorer = Explorer.from_bundle(bundle)
    assert explorer.decode is None
    assert explorer.cohort.n_subjects == cohort.n_subjects
    explorer.select(bounds=(0, 0, 20, 20), on="ecg/umap")
    assert explorer.state.n_selected > 0
    assert isinstance(explorer.decode_pane, pn.pane.Alert)


def test_serving_helpers(bundle) -> None:
    assert bundle_from_argv(["--args", str(bundle)], env={}) == str(bundle)
    assert bundle_from_argv([str(bundle)], env={}) == str(bundle)
    assert bundle_from_argv([], env={"LSE_BUNDLE": "x"}) == "x"
    assert bundle_from_argv([], env={}) is None
    first = cached_cohort(bundle)
    assert cached_cohort(str(bundle)) is first
    timings = warm_up(first)
    assert {"rasterize:density", "selection"} <= set(timings)
