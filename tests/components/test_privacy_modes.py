"""Privacy modes: in aggregate mode nothing of a single subject reaches the page, and small counts show as ``<k``."""

from __future__ import annotations

import json

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import pytest

from lse_panel.components.explorer import Explorer
from lse_panel.components.subject import SubjectInspector
from lse_panel.plotting.latent import create_latent_plot
from lse_panel.testing import tiny_cohort, tiny_decoder, write_cohort_bundle

K = 10


@pytest.fixture(scope="module")
def cohort():
    return tiny_cohort(1_500)


@pytest.fixture
def aggregate(cohort):
    # The older spelling, so this file also runs against explorers without ``privacy=``.
    return Explorer(cohort, tiny_decoder(8), individual_level=False, min_group_size=K)


def _texts(viewable) -> str:
    """Every text object (Markdown, Alert, Str) inside a layout, joined."""
    out = []
    for pane in pn.panel(viewable).select(lambda o: isinstance(o, (pn.pane.Markdown, pn.pane.Str))):
        out.append(str(pane.object))
    return "\n".join(out)


def test_selected_phenotypes_refused_like_selected_ids(aggregate) -> None:
    aggregate.select(indices=np.arange(40))
    with pytest.raises(PermissionError, match="individual-level"):
        aggregate.selected_ids
    with pytest.raises(PermissionError, match="individual-level"):
        aggregate.selected_phenotypes


def test_small_selection_size_shows_as_under_the_floor(aggregate, cohort) -> None:
    aggregate.select(indices=[3, 5, 8])
    controls = _texts(aggregate.selection_controls())
    assert f"<{K}" in controls
    assert "**3**" not in controls and "0.2%" not in controls
    # Everything but a few: the number left out would follow from the total.
    aggregate.select(indices=np.arange(cohort.n_subjects - 2))
    controls = _texts(aggregate.selection_controls())
    assert f">{cohort.n_subjects - K:,}" in controls and f"{cohort.n_subjects - 2:,}" not in controls
    aggregate.select(indices=np.arange(200))
    assert "**200**" in _texts(aggregate.selection_controls())


def test_the_mode_is_shown_in_the_page(aggregate, cohort) -> None:
    assert "privacy: aggregate" in _texts(aggregate.selection_controls())
    assert "privacy: full" in _texts(Explorer(cohort, None, individual_level=True).selection_controls())


def test_condition_preview_and_subgroup_sizes_hide_small_counts(aggregate, cohort) -> None:
    manager = aggregate.subgroups
    age = np.asarray(cohort.phenotype("age"), dtype=float)
    oldest = np.sort(age[np.isfinite(age)])
    # A binary search over "age > X" would find one subject's age from exact counts.
    manager._condition.value = f"age > {oldest[-2]}"
    assert manager._condition_feedback.object == f"✓ <{K} subjects match"
    manager._condition.value = f"age > {oldest[-3]}"
    assert manager._condition_feedback.object == f"✓ <{K} subjects match"
    manager._condition.value = f"age <= {oldest[-2]}"
    assert "subjects match" in manager._condition_feedback.object
    assert f"{int((age <= oldest[-2]).sum()):,}" not in manager._condition_feedback.object
    aggregate.select(indices=[1, 2, 3, 4])
    manager.save_selection("four")
    assert "n = 4" not in _texts(manager)
    assert f"n = <{K}" in _texts(manager)
    manager._on_select("four", None)
    assert "Selected the 4 subjects" not in manager.message and f"<{K}" in manager.message


def test_no_subject_views_and_no_per_subject_scatter(aggregate) -> None:
    aggregate.select(indices=np.arange(600))
    tabs = aggregate.main_panes()[-1]
    assert not any(isinstance(tab, SubjectInspector) for tab in tabs)
    assert aggregate.decode_pane.show_subjects is False
    accuracy = aggregate.accuracy_pane
    accuracy._update_scatter()
    assert accuracy._scatter.objects == []
    assert "one point per subject" in _texts(accuracy)
    for row in aggregate.subgroups._rows.values():
        assert row.download is None


def test_map_pixels_under_the_floor_are_blank(cohort) -> None:
    coords = cohort.projection("fused/umap")
    frame = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "lv_mass": np.asarray(cohort.phenotype("lv_mass"), float)})
    spec = cohort.phenotype_specs["lv_mass"]
    for min_count, expect_sparse in ((0, True), (K, False)):
        # 60×60 pixels: some hold more than the floor, many fewer (zoomed in, most would hold one).
        plot = create_latent_plot(frame, color_by="lv_mass", spec=spec, selection=None, min_count=min_count,
                                  width=60, height=60)
        image = plot[()]
        counts = image.dimension_values("count", flat=False)
        means = image.dimension_values("lv_mass", flat=False)
        drawn = np.isfinite(means) & (np.nan_to_num(counts) > 0)
        assert drawn.any()
        assert bool((counts[drawn] < K).any()) == expect_sparse
        if min_count:
            assert np.all(np.isnan(means[~(np.nan_to_num(counts) >= K)]))


def test_density_and_categorical_maps_hide_sparse_pixels_too(cohort) -> None:
    coords = cohort.projection("fused/umap")
    spec = cohort.phenotype_specs["sex"]
    frame = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1],
                          "sex": pd.Categorical.from_codes(np.asarray(cohort.phenotype("sex")), spec.categories)})
    density = create_latent_plot(frame[["x", "y"]], selection=None, min_count=K, width=40, height=40)[()]
    values = density.dimension_values(density.vdims[0], flat=False).astype(float)
    assert np.nanmin(values) >= K
    stack = create_latent_plot(frame, color_by="sex", spec=spec, selection=None, min_count=K, width=40, height=40)[()]
    assert isinstance(stack, hv.ImageStack)
    total = sum(np.nan_to_num(stack.dimension_values(d, flat=False).astype(float)) for d in stack.vdims)
    assert total[total > 0].min() >= K


def test_subgroup_overlay_draws_cells_of_at_least_the_floor(aggregate, cohort) -> None:
    aggregate.select(indices=np.arange(0, 1_500, 2))
    aggregate.subgroups.save_selection("evens")
    aggregate.subgroups.shown = ["evens"]
    frame = aggregate.overlays.subgroup_frame(next(iter(aggregate.latent_view.views)))
    assert 0 < len(frame) < 750
    assert set(frame["subgroup"]) == {"evens"}


def test_bundle_defaults_follow_the_manifest(cohort, tmp_path) -> None:
    bundle = write_cohort_bundle(cohort, tmp_path / "b")
    assert Explorer.from_bundle(bundle, decode=None).policy.mode == "aggregate"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert Explorer(cohort, None).policy.mode == "full"  # built in memory by the caller
    assert Explorer(cohort, None, privacy="aggregate").policy.mode == "aggregate"
    with pytest.raises(ValueError, match="not one of aggregate, full"):
        Explorer(cohort, None, privacy="open")
    assert manifest["raw"] == {}


def test_selection_highlight_leaves_sparse_pixels_empty(cohort) -> None:
    from lse_panel.plotting.latent import highlight_image

    coords = cohort.projection("fused/umap")
    frame = pd.DataFrame({"x": coords[:40, 0], "y": coords[:40, 1]})
    (x0, x1), (y0, y1) = (coords[:, 0].min(), coords[:, 0].max()), (coords[:, 1].min(), coords[:, 1].max())
    grid = dict(x="x", y="y", x_range=(x0, x1), y_range=(y0, y1), width=200, height=200)
    assert np.isfinite(highlight_image(frame, **grid).dimension_values(2)).any()
    assert not np.isfinite(highlight_image(frame, **grid, min_count=K).dimension_values(2)).any()


def test_histogram_bars_of_fewer_than_k_subjects_are_not_drawn(aggregate, cohort) -> None:
    from lse_panel.analysis.compare import distribution_frames
    from lse_panel.cohort.derived import phenotype_binning

    binning = phenotype_binning(cohort, "age")
    assert ((binning.cohort_counts > 0) & (binning.cohort_counts < K)).any()  # the tails: a few subjects each
    kept = aggregate.policy.suppress_small_cells(binning.cohort_counts)
    assert not ((kept > 0) & (kept < K)).any()
    assert np.array_equal(kept[binning.cohort_counts >= K], binning.cohort_counts[binning.cohort_counts >= K])
    aggregate.select(indices=np.arange(300))
    counts = aggregate.filters._selection_counts("age")
    assert counts.sum() > 0 and not ((counts > 0) & (counts < K)).any()
    frame, _ = distribution_frames(binning, {"selection": binning.counts(np.arange(300))}, policy=aggregate.policy)
    full, _ = distribution_frames(binning, {"selection": binning.counts(np.arange(300))})
    small = (full["count"] > 0) & (full["count"] < K)
    assert small.any() and not ((frame["count"] > 0) & (frame["count"] < K)).any()
