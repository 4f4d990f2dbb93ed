"""The Dask backend gives the in-process backend's results, on both bundle layouts, on a LocalCluster in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lse_panel.analysis.accuracy import accuracy_by_group, selection_metrics
from lse_panel.analysis.compare import compare_with_reference, distribution_frames
from lse_panel.analysis.groups import GroupSet
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort.backend import in_process
from lse_panel.cohort.bundle import open_bundle, read_manifest
from lse_panel.cohort.schema import BundleError
from lse_panel.testing import tiny_cohort, write_cohort_bundle

distributed = pytest.importorskip("distributed")

from lse_panel.cohort.dask_backend import DaskBackend, DaskGroup  # noqa: E402
from lse_panel.plotting.latent import highlight_image  # noqa: E402

N = 3_000
LASSO = np.array([[-8.0, -8.0], [6.0, -7.0], [7.0, 5.0], [0.0, 8.0], [-7.0, 2.0]])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    cohort = tiny_cohort(N)
    root = tmp_path_factory.mktemp("layouts")
    return {
        "npy": write_cohort_bundle(cohort, root / "npy"),
        "parquet": write_cohort_bundle(cohort, root / "parquet", partitions=4),
    }


@pytest.fixture(scope="module")
def local(bundles):
    return in_process(open_bundle(bundles["npy"]))


@pytest.fixture(scope="module", params=["npy", "parquet"])
def remote(request, bundles, client):
    # 7 partitions of the .npy bundle (uneven: 3000 / 450), the Parquet bundle's own 4.
    backend = DaskBackend(bundles[request.param], client, partition_rows=450)
    yield backend
    backend.close()


def test_both_layouts_load_the_same_cohort(bundles) -> None:
    npy, parquet = open_bundle(bundles["npy"]), open_bundle(bundles["parquet"])
    assert read_manifest(bundles["parquet"])["layout"] == {"format": "parquet", "bounds": [0, 750, 1500, 2250, 3000]}
    np.testing.assert_array_equal(npy.ids, parquet.ids)
    for name in npy.phenotype_specs:
        np.testing.assert_array_equal(npy.phenotype(name), parquet.phenotype(name))
    for group in ("latents", "projections"):
        for key, values in getattr(npy, group).items():
            np.testing.assert_array_equal(values, getattr(parquet, group)[key])
    for kind, per in npy.predictions.items():
        for name, values in per.items():
            np.testing.assert_array_equal(values, parquet.predictions[kind][name])


def test_a_damaged_part_is_named(bundles, tmp_path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundles["parquet"], copy)
    part = copy / "parts" / "latents__fused" / "part-00002.parquet"
    part.write_bytes(b"not parquet")
    with pytest.raises(BundleError, match="part-00002.parquet: unreadable as Parquet"):
        open_bundle(copy)


def test_selections_and_set_operations_match(local, remote) -> None:
    box = (-5.0, -5.0, 3.0, 3.0)
    rows_box, group_box = local.select_box("fused/umap", box), remote.select_box("fused/umap", box)
    assert isinstance(group_box, DaskGroup) and 0 < group_box.size < N
    np.testing.assert_array_equal(remote.rows(group_box), rows_box)
    rows_lasso = local.select_lasso("ecg/pca", LASSO[:, 0], LASSO[:, 1])
    group_lasso = remote.select_lasso("ecg/pca", LASSO[:, 0], LASSO[:, 1])
    np.testing.assert_array_equal(remote.rows(group_lasso), rows_lasso)
    for mode in ("new", "add", "intersect", "subtract"):
        expected = local.combine(rows_box, rows_lasso, mode)
        assert remote.combine(group_box, group_lasso, mode).size == expected.size
        np.testing.assert_array_equal(remote.rows(remote.combine(group_box, group_lasso, mode)), expected)
    filters = {"age": (50.0, 65.0), "sex": (1,)}
    np.testing.assert_array_equal(remote.rows(remote.restrict(group_lasso, filters)), local.restrict(rows_lasso, filters))
    np.testing.assert_array_equal(remote.rows(remote.restrict(None, filters)), local.restrict(None, filters))
    np.testing.assert_array_equal(remote.sample(group_lasso, 25), local.sample(rows_lasso, 25))
    ids = local.cohort.ids[[7, 2_999, 1_234]]
    np.testing.assert_array_equal(remote.rows(remote.select_ids(ids)), local.select_ids(ids))
    with pytest.raises(KeyError, match="not in this cohort"):
        remote.select_ids([1, 2])


def test_map_queries_match(local, remote) -> None:
    import datashader as ds

    from lse_panel.plotting.dask_raster import register_cluster_pipeline

    register_cluster_pipeline()  # as the map factory does: partitions aggregated where they live

    np.testing.assert_allclose(remote.extent("mri/umap"), local.extent("mri/umap"))
    assert remote.nearest("fused/umap", 0.3, -1.2) == local.nearest("fused/umap", 0.3, -1.2)
    canvas = ds.Canvas(60, 40, x_range=(-10, 10), y_range=(-10, 10))
    for color_by, agg in (("age", ds.mean("age")), ("sex", ds.by("sex", ds.count()))):
        far = canvas.points(remote.points("fused/umap", color_by), "x", "y", agg=agg)
        near = canvas.points(local.points("fused/umap", color_by), "x", "y", agg=agg)
        np.testing.assert_allclose(far.data, near.data, rtol=1e-6, equal_nan=True)
    # What the map draws for a continuous colour: partitions' counts added, their means weighted by them.
    summary = ds.summary(count=ds.count(), age=ds.mean("age"))
    far = canvas.points(remote.points("fused/umap", "age"), "x", "y", agg=summary)
    near = canvas.points(local.points("fused/umap", "age"), "x", "y", agg=summary)
    np.testing.assert_array_equal(far["count"].data, near["count"].data)
    np.testing.assert_allclose(far["age"].data, near["age"].data, rtol=1e-5, equal_nan=True)
    rows = local.select_box("fused/umap", (-5.0, -5.0, 3.0, 3.0))
    highlight = remote.highlight("fused/umap", remote.select_box("fused/umap", (-5.0, -5.0, 3.0, 3.0)))
    assert len(highlight) == rows.size
    # What the map draws: the highlight layer's image, counted on the workers or here.
    grid = dict(x="x", y="y", x_range=(-10, 10), y_range=(-10, 10), width=60, height=40)
    far, near = highlight_image(highlight, **grid), highlight_image(local.highlight("fused/umap", rows), **grid)
    assert np.isfinite(near.dimension_values("selected")).sum() > 0
    np.testing.assert_array_equal(far.dimension_values("selected"), near.dimension_values("selected"))
    nobody = highlight_image(remote.highlight("fused/umap", remote.select_box("fused/umap", (50.0, 50.0, 60.0, 60.0))), **grid)
    assert np.isnan(nobody.dimension_values("selected")).all()
    np.testing.assert_array_equal(remote.cohort.latent("mri")[[5, 0, 2_999]], local.cohort.latent("mri")[[5, 0, 2_999]])


def test_a_new_selections_highlight_starts_on_the_canvas_drawn_twice(local, remote) -> None:
    grid = dict(x="x", y="y", x_range=(-8, 8), y_range=(-6, 6), width=50, height=30)
    for box in ((-5.0, -5.0, 3.0, 3.0), (-4.0, -4.0, 2.0, 2.0)):  # the same canvas twice: steady
        highlight_image(remote.highlight("ecg/umap", remote.select_box("ecg/umap", box)), **grid)
    assert [key for key, _, _ in remote.canvases.steady()] == ["ecg/umap"]
    selection = remote.restrict(remote.select_box("ecg/umap", (-3.0, -2.0, 4.0, 5.0)), {})
    started = remote.highlight("ecg/umap", selection)
    assert len(started._started) == 1  # counting began when the selection was made
    far = highlight_image(started, **grid)
    assert started._started == {}  # ...and the map used it
    near = highlight_image(local.highlight("ecg/umap", local.select_box("ecg/umap", (-3.0, -2.0, 4.0, 5.0))), **grid)
    np.testing.assert_array_equal(far.dimension_values("selected"), near.dimension_values("selected"))
    highlight_image(started, **{**grid, "width": 40})  # another zoom: nothing is started for the next one
    assert remote.canvases.steady() == []


@pytest.mark.parametrize("comparison", ["rest", "all", "subgroup"])
def test_statistics_match(local, remote, comparison) -> None:
    # Counts, decoded means' latent sums, comparisons, metrics and histograms: the same analysis
    # functions over the same GroupSet sums, summed in one pass here and per partition there.
    rows = local.select_lasso("ecg/pca", LASSO[:, 0], LASSO[:, 1])
    other = np.arange(0, N, 3) if comparison == "subgroup" else None
    policy = PrivacyPolicy(min_group_size=5)
    kind = "subgroup" if comparison == "subgroup" else comparison
    near = GroupSet(N, rows, kind, other, extra={"thirds": np.arange(1, N, 3)}, policy=policy,
                    sums=local.latent_sums(), metric_sums=local.metric_sums())  # fmt: skip
    far = GroupSet(N, remote.from_rows(rows), kind, None if other is None else remote.from_rows(other),
                   extra={"thirds": remote.from_rows(np.arange(1, N, 3))}, policy=policy,
                   sums=remote.latent_sums(), metric_sums=remote.metric_sums())  # fmt: skip
    assert far.remote and far.sizes == near.sizes and far.hidden == near.hidden
    with pytest.raises(TypeError, match="kept on a cluster"):
        far.rows("comparison")
    for label in near.labels:
        np.testing.assert_allclose(far.mean_latent(label, "fused"), near.mean_latent(label, "fused"), rtol=1e-9)
    specs = local.cohort.phenotype_specs
    tables = []
    for backend, groups in ((local, near), (remote, far)):
        source = backend.phenotype_sums()
        stats = {label: groups.sum_over(label, "phenotypes", source.total, source.rows_sum) for label in groups.labels}
        tables.append(compare_with_reference({"selection": stats["selection"], "thirds": stats["thirds"]},
                                             stats["comparison"], specs, policy=policy))  # fmt: skip
    pd.testing.assert_frame_equal(tables[1], tables[0], rtol=1e-9)
    assert (tables[0]["n_a"] > 0).all()
    pd.testing.assert_frame_equal(selection_metrics(far), selection_metrics(near), rtol=1e-9)
    labels = {"selection": "a", "comparison": "b", "thirds": "c"}
    pd.testing.assert_frame_equal(
        accuracy_by_group(far, labels, policy=policy), accuracy_by_group(near, labels, policy=policy), rtol=1e-9
    )
    for name in ("age", "sex"):
        np.testing.assert_array_equal(remote.bin_counts(name, far.selection), local.bin_counts(name, rows))
        np.testing.assert_array_equal(remote.binning(name).cohort_counts, local.binning(name).cohort_counts)
        counts = [{label: backend.binning(name).counts(groups.members(label)) for label in groups.labels}
                  for backend, groups in ((local, near), (remote, far))]  # fmt: skip
        far_frame, far_hidden = distribution_frames(remote.binning(name), counts[1], policy=policy)
        near_frame, near_hidden = distribution_frames(local.binning(name), counts[0], policy=policy)
        pd.testing.assert_frame_equal(far_frame, near_frame)
        assert far_hidden == near_hidden
    assert remote.finite_range("lvef") == local.finite_range("lvef")


def test_remote_columns_fetch_rows_and_refuse_copies(remote, local) -> None:
    column = remote.cohort.phenotype("age")
    assert len(column) == N and column.dtype == np.float32
    np.testing.assert_array_equal(column[[10, 3, 2_000]], local.cohort.phenotype("age")[[10, 3, 2_000]])
    assert column[4] == local.cohort.phenotype("age")[4]
    with pytest.raises(TypeError, match="stays on the Dask cluster"):
        np.asarray(column)
