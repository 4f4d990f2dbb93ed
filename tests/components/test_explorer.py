"""The Explorer composition: selection from Python, ids and phenotypes out, bundles, every pane linked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn
import pytest

from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.analysis.selection import ray_casting_mask_reference
from lse_panel.cohort.subgroups import SubgroupError
from lse_panel.components.explorer import Explorer
from lse_panel.components.subject import SubjectInspector, subject_phenotypes
from lse_panel.testing import tiny_cohort, tiny_decoder, write_cohort_bundle


@pytest.fixture(scope="module")
def cohort():
    return tiny_cohort(1_500)


@pytest.fixture
def explorer(cohort):
    return Explorer(cohort, tiny_decoder(8))


@pytest.fixture(scope="module")
def bundle(cohort, tmp_path_factory):
    return write_cohort_bundle(cohort, tmp_path_factory.mktemp("bundle") / "tiny")


def test_select_by_ids_updates_every_view(cohort) -> None:
    explorer = Explorer(cohort, tiny_decoder(8), min_group_size=1)  # three subjects: the floor off
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


# -- subgroups, comparison, perturbation, interpolation, privacy --------------------------------
def _tab_names(explorer: Explorer) -> list[str]:
    return list(explorer.main_panes()[-1]._names)


def test_subgroup_api_and_tabs() -> None:
    cohort = tiny_cohort(400)  # its own cohort: in-memory subgroups are shared per cohort object
    explorer = Explorer(cohort, tiny_decoder(8))
    assert explorer.policy == PrivacyPolicy(min_group_size=10, individual_views=True)
    assert explorer.state.store is explorer.store
    assert _tab_names(explorer) == ["Decode", "Accuracy", "Compare", "Failures", "Perturb", "Interpolate", "Subgroups", "Subject"]
    assert explorer.subgroup_names == []
    with pytest.raises(SubgroupError, match="nothing is selected"):
        explorer.save_subgroup("empty")
    explorer.select(indices=np.arange(0, 200, 2))
    group = explorer.save_subgroup("evens", "#112233")
    assert group.n == 100 and group.colour == "#112233"
    explorer.select(indices=np.arange(300, 360))
    explorer.save_subgroup("tail")
    assert explorer.subgroup_names == ["evens", "tail"]
    # Every pane offers them: the comparison control, the comparison pane, the interpolation endpoints.
    assert list(explorer._comparison.options) == ["rest", "all", "evens", "tail"]
    assert explorer.compare_pane.param.subgroups.objects == ["evens", "tail"]
    assert explorer.interpolate_pane.param.start.objects == ["evens", "tail"]
    table = explorer.compare(["evens", "tail"])
    assert set(table["group"]) == {"selection", "evens", "tail"} and set(table["reference"]) == {"rest"}
    assert table is explorer.compare_pane.table
    explorer._comparison.value = "evens"
    assert explorer.state.comparison == "evens"
    np.testing.assert_array_equal(explorer.state.comparison_indices(), np.arange(0, 200, 2))
    assert set(explorer.compare([])["reference"]) == {"evens"}
    pn.panel(explorer).get_root()


def test_only_the_visible_tab_recomputes_on_a_selection() -> None:
    """What a served explorer wires (a notebook keeps every pane live): hidden panes catch up when shown."""
    explorer = Explorer(tiny_cohort(400), tiny_decoder(8))
    tabs = explorer.main_panes()[-1]
    panes = [explorer.decode_pane, explorer.accuracy_pane, explorer.compare_pane, explorer.failures_pane,
             explorer.perturb_pane, explorer.interpolate_pane, explorer.subgroups, explorer.subject]
    Explorer._recompute_only_visible(tabs, panes)
    tabs.active = 3  # the failures pane
    assert explorer.failures_pane.scheduler.active and not explorer.accuracy_pane.scheduler.active
    explorer.select(indices=np.arange(100))
    assert explorer.accuracy_pane.metrics is None  # hidden: not recomputed
    tabs.active = 1
    assert explorer.accuracy_pane.scheduler.active and not explorer.failures_pane.scheduler.active
    assert explorer.accuracy_pane.metrics is not None and "selection" in set(explorer.accuracy_pane.metrics["group"])


def test_without_a_decoder_the_decoding_panes_say_so(cohort) -> None:
    explorer = Explorer(cohort, None, individual_level=False)
    for pane in (explorer.decode_pane, explorer.perturb_pane, explorer.interpolate_pane):
        assert isinstance(pane, pn.pane.Alert) and "no decoder" in pane.object
    assert _tab_names(explorer) == ["Decode", "Accuracy", "Compare", "Failures", "Perturb", "Interpolate", "Subgroups"]
    assert not explorer.policy.individual_views


def test_privacy_floor_hides_a_selection_of_five_in_every_pane() -> None:
    cohort = tiny_cohort(400)
    explorer = Explorer(cohort, tiny_decoder(8))
    explorer.select(indices=np.arange(5))
    why = "fewer than 10 subjects (5)"
    decode, accuracy = explorer.decode_pane, explorer.accuracy_pane
    assert decode.decoded == {} and why in decode.message
    small = accuracy.metrics[accuracy.metrics["group"] != "cohort"]
    assert small["value"].isna().all() and why in accuracy.message
    assert why in explorer.filters.hidden
    assert all(pipe.data.sum() == 0 for pipe in explorer.filters._pipes.values())
    compare = explorer.compare_pane  # against "rest", nothing at all: the rest would reveal the five
    assert compare.table is None and compare.distributions == {} and why in compare.message
    explorer.perturb_pane.amount = 1.0
    assert explorer.perturb_pane.decoded == {} and why in explorer.perturb_pane.message
    interpolate = explorer.interpolate_pane
    assert interpolate.decoded == {} and interpolate.latents is None and why in interpolate.message
    assert all(interpolate.path_coords(view.key) is None for view in explorer.latent_view.views.values())


@pytest.mark.parametrize("floor", [0, 1])
def test_a_floor_of_zero_or_one_shows_every_aggregate(floor: int) -> None:
    cohort = tiny_cohort(400)
    explorer = Explorer(cohort, tiny_decoder(8), min_group_size=floor)
    assert explorer.policy.min_group_size == floor
    explorer.select(indices=np.arange(5))
    assert set(explorer.decode_pane.decoded) == {"selection", "comparison"}
    metrics = explorer.accuracy_pane.metrics
    assert metrics.loc[metrics["group"] == "selection", "value"].notna().any()
    assert explorer.filters.hidden == "" and explorer.filters._pipes["sex"].data.sum() == 5
    assert not explorer.compare_pane.table["hidden"].any()
    explorer.perturb_pane.amount = 1.0
    assert set(explorer.perturb_pane.decoded) == {"perturbed", "original"}
    assert explorer.interpolate_pane.latents is not None


def test_decode_from_offers_only_the_kinds_the_decoder_decodes(cohort) -> None:
    full = tiny_decoder(8)

    class EcgFromEcg:
        """A user's decoder of one modality: the ECG latent into ECGs; the fused latent into nothing."""

        kinds = ("ecg", "fused")

        def __call__(self, latents: np.ndarray, kind: str) -> dict[str, np.ndarray]:
            return {"ecg": full(latents, kind)["ecg"]} if kind == "ecg" else {}

    explorer = Explorer(cohort, EcgFromEcg())
    assert explorer.state.param.decode_from.objects == ["ecg", "fused"]
    explorer.state.decode_from = "ecg"
    explorer.select(indices=np.arange(200))
    pane = explorer.decode_pane
    assert set(pane.decoded["selection"]) == {"ecg"} and list(pane._cards.pipes) == ["ecg"]  # no MRI card
    explorer.state.decode_from = "fused"
    assert "no modality for the fused latent" in pane.message and not pane._means.visible
    assert Explorer(cohort, tiny_decoder(8, kinds=("pet",))).decode is None  # decodes none of these kinds
