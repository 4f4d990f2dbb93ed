"""Found slices for display: the table's columns per task, one slice per latent kind, a region's closed outline."""

from __future__ import annotations

import numpy as np

from lse_panel.cohort.slices import find_failures
from lse_panel.plotting.slices import create_region_outline, format_latent_metrics, format_slice_table
from lse_panel.testing import tiny_cohort


def test_classification_slices_show_auroc_side_by_side() -> None:
    cohort = tiny_cohort(4_000, seed=1)
    score = cohort.predictions["mri"]["af"].copy()
    older = cohort.phenotype("age") >= np.quantile(cohort.phenotype("age"), 0.7)
    score[older] = 1 - score[older]  # the MRI latent calls these the wrong way round
    cohort.predictions["mri"] = {**cohort.predictions["mri"], "af": score}
    found = find_failures(cohort, "af", latent="mri", projections=None, only_significant=False, top=3)
    table = format_slice_table(found)
    assert list(table.columns) == [
        "latent", "#", "slice", "n", "AUROC in slice", "AUROC in rest", "gap [interval]", "q",
        "AUROC · ecg", "AUROC · mri", "AUROC · fused", "kind", "tried",
    ]  # fmt: skip
    assert table["slice"].tolist() == found["rule"].tolist()
    np.testing.assert_allclose(table["AUROC in slice"], found["auroc_mri"])
    per_latent = format_latent_metrics(found.iloc[0].to_dict(), "classification")
    assert list(per_latent.index) == ["ecg", "mri", "fused"]
    assert list(per_latent.columns) == [
        "AUROC in slice", "AUROC in rest", "AUROC difference",
        "bal. acc. in slice", "bal. acc. in rest", "bal. acc. difference",
    ]  # fmt: skip
    assert per_latent.loc["mri", "AUROC in slice"] < 0.5 < per_latent.loc["ecg", "AUROC in slice"]


def test_region_outline_is_closed_and_nothing_without_a_region() -> None:
    outline = create_region_outline({"xs": [0, 1, 1], "ys": [0, 0, 1]})
    (path,) = outline.split()
    np.testing.assert_array_equal(path.array()[[0, -1]], [[0, 0], [0, 0]])
    assert len(path.array()) == 4
    assert create_region_outline(None).split() == [] and create_region_outline({"xs": [1], "ys": [2]}).split() == []
