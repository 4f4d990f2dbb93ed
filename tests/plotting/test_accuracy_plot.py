"""Accuracy factories: the change colour means better/worse for every metric, intervals reach the table."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from lse_panel.plotting.accuracy import (
    CHANGE_CMAP,
    create_forest_plot,
    create_metric_heatmap,
    forest_rows,
    create_predicted_vs_true_plot,
    format_metric_table,
    metric_change,
)


def _long() -> pd.DataFrame:
    rows = []
    values = {
        # (phenotype, task, metric): {group: value}; selection worse on R², better on MAE
        ("age", "regression", "r2"): {"selection": 0.4, "comparison": 0.6, "cohort": 0.5},
        ("age", "regression", "mae"): {"selection": 4.0, "comparison": 6.0, "cohort": 5.0},
        ("af", "classification", "auroc"): {"selection": 0.9, "comparison": 0.8, "cohort": 0.85},
        ("af", "classification", "balanced_accuracy"): {"selection": 0.7, "comparison": 0.7, "cohort": 0.7},
    }
    for latent, shift in (("ecg", 0.0), ("mri", 0.01)):
        for (phenotype, task, metric), per in values.items():
            for group, value in per.items():
                v = value + shift
                rows.append((phenotype, task, latent, group, metric, v, v - 0.05, v + 0.05, 100, None, ""))
    return pd.DataFrame(
        rows,
        columns=["phenotype", "task", "latent", "group", "metric", "value", "ci_low", "ci_high", "n", "n_pos", "reason"],
    )


def _opts(element: hv.core.Dimensioned) -> dict:
    return hv.Store.lookup_options("bokeh", element, "plot").kwargs | hv.Store.lookup_options(
        "bokeh", element, "style"
    ).kwargs


def test_metric_change_is_positive_when_the_group_does_better() -> None:
    change = metric_change(_long()).set_index(["phenotype", "metric", "latent"])["change"]
    assert change[("age", "r2", "ecg")] == pytest.approx(0.4 - 0.5)  # worse: negative
    assert change[("age", "mae", "ecg")] == pytest.approx((5.0 - 4.0) / 5.0)  # lower MAE is better: positive
    assert change[("af", "auroc", "ecg")] == pytest.approx(0.05)
    assert change[("af", "balanced_accuracy", "ecg")] == pytest.approx(0.0)


def test_metric_change_tolerates_a_missing_group_and_nan() -> None:
    long = _long()
    long.loc[long["group"] == "selection", "value"] = np.nan
    out = metric_change(long[long["group"] != "comparison"])
    assert out["change"].isna().all()
    assert "comparison" not in out.columns


def test_table_has_latents_side_by_side_with_intervals() -> None:
    table = format_metric_table(_long())
    assert list(table.columns.get_level_values(0).unique()) == ["ecg", "mri"]
    assert list(table.columns.get_level_values(1)[:3]) == ["selection", "comparison", "cohort"]
    assert table.loc["age · R²", ("ecg", "selection")] == "0.4 [0.35, 0.45]"
    assert set(table.index) == {"age · R²", "age · MAE", "af · AUROC", "af · bal. acc."}
    assert format_metric_table(_long().iloc[:0]).empty


def test_heatmap_colours_by_change_on_a_symmetric_diverging_scale() -> None:
    overlay = create_metric_heatmap(_long())
    heatmap, labels = list(overlay)
    assert isinstance(heatmap, hv.HeatMap) and isinstance(labels, hv.Labels)
    opts = _opts(heatmap)
    assert opts["cmap"] == CHANGE_CMAP
    low, high = opts["clim"]
    assert low == -high == pytest.approx(-0.2)  # the largest |change|: MAE's relative (5 - 4) / 5 for ecg
    assert set(heatmap.dimension_values("latent")) == {"ecg", "mri"}
    assert {"selection", "comparison", "cohort"} <= {d.name for d in heatmap.vdims}
    hv.render(overlay, backend="bokeh")


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_predicted_vs_true_has_one_panel_per_latent(task: str) -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 50) if task == "classification" else rng.normal(size=50)
    preds = {"ecg": rng.random(50).astype(np.float32), "fused": rng.random(50).astype(np.float32)}
    preds["ecg"][0] = np.nan  # a missing prediction is left out
    layout = create_predicted_vs_true_plot(
        truth, preds, task=task, phenotype="x", categories=("no", "yes")
    )
    panels = list(layout)
    assert len(panels) == 2
    main = list(panels[0])[0]
    assert isinstance(main, hv.Scatter if task == "regression" else hv.BoxWhisker)
    assert len(main) == 49
    if task == "classification":
        assert set(main.dimension_values("true")) <= {"no", "yes"}
    hv.render(layout, backend="bokeh")
    with pytest.raises(ValueError, match="task"):
        create_predicted_vs_true_plot(truth, preds, task="ranking", phenotype="x")


def test_each_phenotype_gets_only_the_metrics_of_its_task() -> None:
    change = metric_change(_long())
    assert len(change) == 8  # 2 phenotypes × 2 metrics × 2 latents, not × 4 metrics
    by_phenotype = change.groupby("phenotype", observed=True)["metric"].agg(lambda m: sorted(set(m)))
    assert by_phenotype["age"] == ["mae", "r2"]
    assert by_phenotype["af"] == ["auroc", "balanced_accuracy"]
    heatmap, _ = list(create_metric_heatmap(_long()))
    rows = list(dict.fromkeys(heatmap.dimension_values("row")))
    assert sorted(rows) == sorted(["age · R²", "age · MAE", "af · AUROC", "af · bal. acc."])
    assert np.isfinite(heatmap.dimension_values("change")).all()  # no empty cells
    # A masked (hidden) group keeps its rows, with NaN values.
    long = _long()
    long.loc[long["group"] == "selection", "value"] = np.nan
    assert len(metric_change(long)) == 8


def test_forest_rows_put_each_group_in_its_row_and_hidden_groups_draw_nothing() -> None:
    long = _long()
    long.loc[long["group"] == "comparison", ["value", "ci_low", "ci_high"]] = np.nan  # hidden by the floor
    frame, labels = forest_rows(long, "r2")
    assert labels == ["age · ecg", "age · mri"]
    by = frame.set_index(["latent", "group"])
    assert by.loc[("ecg", "selection"), "y"] < by.loc[("ecg", "comparison"), "y"] < by.loc[("ecg", "cohort"), "y"] < 1
    assert by.loc[("mri", "selection"), "value"] == pytest.approx(0.41) and by.loc[("mri", "selection"), "ci_high"] == pytest.approx(0.46)
    overlay = create_forest_plot(long, metric="r2")
    scatters = [el for el in overlay if isinstance(el, hv.Scatter)]
    assert [el.label for el in scatters] == ["selection", "comparison", "cohort"]
    assert np.isnan(scatters[1].dimension_values("value")).all()
    figure = hv.render(overlay)
    assert list(figure.yaxis[0].major_label_overrides.values()) == labels
    assert forest_rows(long, "mae")[1] == ["age · ecg", "age · mri"] and forest_rows(long.iloc[:0], "r2")[1] == []
