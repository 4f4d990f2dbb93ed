"""Comparison factories: overlaid distributions, effect bars ordered by size, hidden cells."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd

from lse_panel.analysis.histograms import category_frame, histogram_frame
from lse_panel.plotting.compare import (
    REFERENCE_COLOUR,
    SELECTION_COLOUR,
    create_category_bars,
    create_distribution_plot,
    create_effect_plot,
    create_histogram_overlay,
    format_accuracy_table,
    format_comparison_table,
    group_colours,
)


def test_histogram_overlay_has_one_layer_per_group_in_its_colour() -> None:
    edges = np.linspace(0, 1, 5)
    frame = histogram_frame({"selection": np.array([1, 2, 3, 4]), "rest": np.array([4, 3, 2, 1])}, edges)
    overlay = create_histogram_overlay(frame, phenotype="age", units="years",
                                       colours={"selection": SELECTION_COLOUR, "rest": REFERENCE_COLOUR})
    assert [el.label for el in overlay] == ["selection", "rest"]
    assert all(isinstance(el, hv.Histogram) for el in overlay)
    colour = hv.Store.lookup_options("bokeh", overlay.get(0), "style").kwargs["color"]
    assert colour == SELECTION_COLOUR
    assert overlay.get(0).kdims[0].label == "age (years)"
    hv.render(overlay)


def test_category_bars_and_dispatch() -> None:
    frame = category_frame({"selection": np.array([3, 7]), "rest": np.array([5, 5])}, ["female", "male"])
    bars = create_category_bars(frame, phenotype="sex")
    assert [d.name for d in bars.kdims] == ["category", "group"]
    assert isinstance(create_distribution_plot(frame, kind="binary", phenotype="sex"), hv.Bars)
    plot = hv.render(bars)
    assert plot.x_range.factors[0] == ("female", "selection")


def test_effect_plot_orders_by_largest_effect_and_drops_missing() -> None:
    table = pd.DataFrame({
        "phenotype": ["a", "b", "c", "a", "b", "c"],
        "group": ["s", "s", "s", "g", "g", "g"],
        "effect": [0.1, -0.9, np.nan, 0.3, 0.2, np.nan],
        "effect_kind": ["cohen_d"] * 6,
        "q_value": [0.5] * 6,
    })
    bars = create_effect_plot(table, colours={"s": "#000000"})
    # |−0.9| first, c (no effect) left out; one labelled row per phenotype and group.
    assert bars.kdims[0].values == ["b · s", "b · g", "a · s", "a · g"]
    assert len(bars) == 4
    plot = hv.render(bars)
    assert list(plot.y_range.factors) == ["a · g", "a · s", "b · g", "b · s"]  # b · s drawn on top
    one = create_effect_plot(table[table["group"] == "s"])
    assert one.kdims[0].values == ["b", "a"]  # one group: the phenotype alone names its row
    hv.render(create_effect_plot(table.iloc[:0]))


def test_effect_plot_gives_every_row_its_height_at_50_phenotypes() -> None:
    names = [f"phenotype_{i:02d}" for i in range(50)]
    table = pd.DataFrame({
        "phenotype": names * 2, "group": ["selection"] * 50 + ["older"] * 50,
        "effect": np.linspace(-1, 1, 100), "effect_kind": ["cohen_d"] * 100, "q_value": [0.01] * 100,
    })
    bars = create_effect_plot(table, row_height=18)
    plot = hv.render(bars)
    assert len(plot.y_range.factors) == 100 and len(set(plot.y_range.factors)) == 100
    assert plot.height >= 100 * 18  # every label gets a row of its own


def test_group_colours_keep_known_and_fill_the_rest() -> None:
    colours = group_colours(["selection", "x", "y"], {"selection": SELECTION_COLOUR})
    assert colours["selection"] == SELECTION_COLOUR and len(set(colours.values())) == 3


def test_comparison_table_sorts_and_shows_hidden_groups() -> None:
    long = pd.DataFrame({
        "group": ["s", "s", "t", "t"],
        "phenotype": ["age", "af", "age", "af"],
        "type": ["continuous", "binary"] * 2,
        "effect_kind": ["cohen_d", "cohen_h"] * 2,
        "mean_a": [60.0, 0.25, np.nan, np.nan],
        "mean_b": [58.0, 0.1, np.nan, np.nan],
        "effect": [0.2, 0.5, np.nan, np.nan],
        "statistic": [2.0, 4.0, np.nan, np.nan],
        "q_value": [0.04, 1e-5, np.nan, np.nan],
        "hidden": [False, False, True, True],
    })
    table = format_comparison_table(long, reference="rest", hidden_text="hidden")
    assert list(table.index) == ["af", "age"]
    assert table.loc["af", "s mean"] == "25.0%" and table.loc["af", "rest mean"] == "10.0%"
    assert table.loc["age", "t effect"] == "hidden" and table.loc["af", "s q"] == "1.00e-05"


def test_accuracy_table_differences_from_reference() -> None:
    long = pd.DataFrame({
        "phenotype": ["age"] * 3, "latent": ["ecg"] * 3, "metric": ["r2"] * 3,
        "group": ["rest", "selection", "tiny"], "value": [0.5, 0.6, np.nan],
    })
    table = format_accuracy_table(long, groups=["rest", "selection", "tiny"], reference="rest",
                                  hidden=pd.Series([False, False, True]))
    row = table.loc["age · r2 · ecg"]
    assert row["selection"] == "0.6" and row["Δ selection"] == "0.1" and row["tiny"] == "hidden"
