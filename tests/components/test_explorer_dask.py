"""One set of panes on either backend: the Explorer on a LocalCluster shows what the in-process Explorer shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lse_panel.cohort.bundle import open_bundle
from lse_panel.components.explorer import Explorer
from lse_panel.testing import tiny_cohort, tiny_decoder, write_cohort_bundle

distributed = pytest.importorskip("distributed")

LASSO = np.array([[-8.0, -8.0], [6.0, -7.0], [7.0, 5.0], [0.0, 8.0], [-7.0, 2.0]])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_cohort_bundle(tiny_cohort(2_000), tmp_path_factory.mktemp("dask") / "tiny", partitions=3)


def _explorers(bundle, client) -> tuple[Explorer, Explorer]:
    # Full mode (a bundle that is not synthetic defaults to aggregate): the ids and inspector are compared too.
    near = Explorer(open_bundle(bundle), tiny_decoder(8), min_group_size=5, privacy="full")
    far = Explorer.from_bundle(bundle, tiny_decoder(8), dask=client, min_group_size=5, privacy="full")
    return near, far


@pytest.mark.parametrize("comparison", ["rest", "all"])
def test_every_pane_shows_the_same_on_a_cluster(bundle, client, comparison) -> None:
    near, far = _explorers(bundle, client)
    assert type(far.backend).__name__ == "DaskBackend"
    for explorer in (near, far):
        explorer.state.comparison = comparison
        explorer.select(lasso=LASSO, on="ecg/pca")
        explorer.state.filters = {"age": (40.0, 70.0)}
        explorer.compare_pane.compare()
    assert far.state.n_selected == near.state.n_selected > 0
    np.testing.assert_array_equal(far.selected_indices, near.selected_indices)
    np.testing.assert_array_equal(far.selected_ids, near.selected_ids)
    for label, items in near.decode_pane.decoded.items():
        for modality, values in items.items():
            np.testing.assert_allclose(far.decode_pane.decoded[label][modality], values, rtol=1e-6)
    pd.testing.assert_frame_equal(far.accuracy_pane.metrics, near.accuracy_pane.metrics)
    pd.testing.assert_frame_equal(far.compare_pane.table, near.compare_pane.table, rtol=1e-9)
    pd.testing.assert_frame_equal(far.compare_pane.accuracy, near.compare_pane.accuracy)
    for name, (frame, hidden) in near.compare_pane.distributions.items():
        pd.testing.assert_frame_equal(far.compare_pane.distributions[name][0], frame)
        assert far.compare_pane.distributions[name][1] == hidden
    for name, pipe in near.filters._pipes.items():
        np.testing.assert_array_equal(far.filters._pipes[name].data, pipe.data)
    np.testing.assert_array_equal(far.decode_pane.sample_rows, near.decode_pane.sample_rows)
    far.backend.close()


def test_saved_subgroups_are_joined_on_the_workers(bundle, client, tmp_path) -> None:
    import shutil

    path = tmp_path / "copy"
    shutil.copytree(bundle, path)
    near = Explorer(open_bundle(path), tiny_decoder(8), min_group_size=5)
    near.select(bounds=(0.0, 0.0, 20.0, 20.0), on="fused/umap")
    assert near.state.n_selected > 100
    near.save_subgroup("middle")
    far = Explorer.from_bundle(path, tiny_decoder(8), dask=client, min_group_size=5)
    near.select(lasso=LASSO, on="ecg/pca")
    far.select(lasso=LASSO, on="ecg/pca")
    near.state.comparison = far.state.comparison = "middle"
    assert far.state.groups.sizes == near.state.groups.sizes
    pd.testing.assert_frame_equal(far.compare(), near.compare(), rtol=1e-9)
    far.subgroups.select("middle")
    np.testing.assert_array_equal(far.selected_indices, near.store.members("middle"))
    far.save_subgroup("again")  # a cluster selection saved by id, read back in process
    np.testing.assert_array_equal(near.store.members("again"), near.store.members("middle"))
    far.backend.close()


@pytest.fixture(scope="module")
def failing_bundle(tmp_path_factory):
    cohort = tiny_cohort(2_000)
    pred = cohort.predictions["fused"]["lvef"].copy()
    pred[cohort.phenotype("sex") == 0] += 20  # a failure the slice search must find: women's LVEF
    cohort.predictions["fused"] = {**cohort.predictions["fused"], "lvef": pred}
    return write_cohort_bundle(cohort, tmp_path_factory.mktemp("failing") / "tiny", partitions=3)


def test_failures_and_conditions_on_a_cluster(failing_bundle, client) -> None:
    near, far = _explorers(failing_bundle, client)
    for explorer in (near, far):
        explorer.failures_pane.param.update(target="lvef", latent="fused", regions=False)
    found = near.failures_pane.search()
    assert found.iloc[0]["rule"] == 'sex == "female"'
    pd.testing.assert_frame_equal(far.failures_pane.search(), found)
    near.failures_pane.choose(0)
    far.failures_pane.choose(0)
    np.testing.assert_array_equal(far.selected_indices, near.selected_indices)
    far.failures_pane._sync_chosen()  # the cluster's selection is still the chosen slice
    assert far.failures_pane.chosen == 0
    pd.testing.assert_frame_equal(
        far.find_failures("lvef", "fused", max_fraction=1.0), near.find_failures("lvef", "fused", max_fraction=1.0)
    )
    far.subgroups._condition.value = near.subgroups._condition.value = "age >= 60"
    assert far.subgroups._condition_feedback.object == near.subgroups._condition_feedback.object
    assert near.subgroups._condition_feedback.object.startswith("✓")
    group = far.subgroups.save_condition("older", "age >= 60")  # rows found on the cluster, stored by id
    ages = np.asarray(open_bundle(failing_bundle).phenotype("age"))
    np.testing.assert_array_equal(near.store.members("older"), np.flatnonzero(ages >= 60))
    assert group.n == int((ages >= 60).sum())
    far.backend.close()
