"""HoloViews factories for group comparison: overlaid phenotype distributions, effect-size bars, formatted tables."""

from __future__ import annotations

from typing import Mapping, Sequence

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh options these factories set)
import numpy as np
import pandas as pd

from lse_panel.palette import FALLBACK_COLOURS, HIGHLIGHT, REFERENCE_COLOUR

SELECTION_COLOUR = HIGHLIGHT
"""The selection is drawn in the latent views' highlight colour everywhere."""

EFFECT_LABELS = {"cohen_d": "Cohen's d", "cohen_h": "Cohen's h", "cramers_v": "Cramér's V"}


def group_colours(groups: Sequence[str], known: Mapping[str, str] | None = None) -> dict[str, str]:
    """A colour per group: ``known`` ones first, then a fixed palette in order.

    Parameters
    ----------
    groups
        Group labels, in display order.
    known
        Colours already decided (the selection's highlight, saved subgroups' colours).

    Returns
    -------
    dict
        ``{group: "#rrggbb"}`` for every group.
    """
    known = dict(known or {})
    spare = iter(c for c in FALLBACK_COLOURS * 4 if c not in known.values())
    return {g: known.get(g) or next(spare, REFERENCE_COLOUR) for g in groups}


# -- factories ---------------------------------------------------------------------------------
def create_histogram_overlay(
    frame: pd.DataFrame,
    *,
    phenotype: str,
    units: str = "",
    colours: Mapping[str, str] | None = None,
    width: int = 340,
    height: int = 240,
) -> hv.Overlay:
    """Overlaid normalised histograms of one continuous phenotype, one per group, semi-transparent.

    Parameters
    ----------
    frame
        From :func:`lse_panel.analysis.histograms.histogram_frame`.
    phenotype, units
        Axis label.
    colours
        ``{group: colour}``; missing groups get :func:`group_colours`' palette.
    width, height
        Plot size in pixels.

    Returns
    -------
    holoviews.Overlay
        One :class:`holoviews.Histogram` per group, labelled by the group.
    """
    groups = list(dict.fromkeys(frame["group"]))
    colours = group_colours(groups, colours)
    x = hv.Dimension(phenotype, label=f"{phenotype} ({units})" if units else phenotype)
    y = hv.Dimension("density")
    layers = []
    for group in groups:
        part = frame[frame["group"] == group]
        edges = np.r_[part["left"].to_numpy(), part["right"].to_numpy()[-1:]]
        # Labelled by the group alone: a plot fed new data through a Pipe keeps its layers' labels.
        layers.append(
            hv.Histogram((edges, part["density"].to_numpy()), kdims=[x], vdims=[y], label=str(group)).opts(
                color=colours[group], fill_alpha=0.35, line_color=colours[group], line_alpha=0.9, line_width=1.5,
            )
        )
    if not layers:
        layers = [hv.Histogram(([0.0, 1.0], [0.0]), kdims=[x], vdims=[y])]
    return hv.Overlay(layers).opts(
        width=width, height=height, title=phenotype, legend_position="top_right", toolbar=None, framewise=True,
        show_legend=True,
    )


def create_category_bars(
    frame: pd.DataFrame,
    *,
    phenotype: str,
    colours: Mapping[str, str] | None = None,
    width: int = 340,
    height: int = 240,
) -> hv.Bars:
    """Grouped bars of a binary or categorical phenotype: each group's proportion in each category.

    Parameters
    ----------
    frame
        From :func:`lse_panel.analysis.histograms.category_frame`.
    phenotype
        Title.
    colours
        ``{group: colour}``; missing groups get :func:`group_colours`' palette.
    width, height
        Plot size in pixels.

    Returns
    -------
    holoviews.Bars
        Key dimensions ``category`` then ``group`` (bars side by side within a category).
    """
    groups = list(dict.fromkeys(frame["group"]))
    colours = group_colours(groups, colours)
    data = frame.assign(group=frame["group"].astype(str), category=frame["category"].astype(str))
    category = hv.Dimension("category", values=list(dict.fromkeys(data["category"])))
    group = hv.Dimension("group", values=[str(g) for g in groups])
    colour = hv.dim("group").categorize(colours, default=REFERENCE_COLOUR) if len(data) else REFERENCE_COLOUR
    return hv.Bars(data, kdims=[category, group], vdims=["proportion", "count", "n"]).opts(
        color=colour, width=width, height=height,
        title=phenotype, tools=["hover"], toolbar=None, ylim=(0, None), xrotation=0, framewise=True,
        multi_level=True, line_color=None,
    )


def create_distribution_plot(
    frame: pd.DataFrame,
    *,
    kind: str,
    phenotype: str,
    units: str = "",
    colours: Mapping[str, str] | None = None,
    width: int = 340,
    height: int = 240,
) -> hv.Element | hv.Overlay:
    """:func:`create_histogram_overlay` for ``kind="continuous"``, :func:`create_category_bars` otherwise."""
    if kind == "continuous":
        return create_histogram_overlay(frame, phenotype=phenotype, units=units, colours=colours, width=width,
                                        height=height)  # fmt: skip
    if kind in ("binary", "categorical"):
        return create_category_bars(frame, phenotype=phenotype, colours=colours, width=width, height=height)
    raise ValueError(f"phenotype type must be 'continuous', 'binary' or 'categorical'; got {kind!r}.")


def effect_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (phenotype, group) with an effect, largest ``|effect|`` first, each with its own label.

    Phenotypes are ordered by their largest ``|effect|`` over the groups; within a phenotype the
    groups keep the table's order. A row's ``row`` label is the phenotype alone when one group is
    compared, ``"phenotype · group"`` otherwise, so every row of the chart is named.

    Parameters
    ----------
    table
        Long comparison table (``phenotype``, ``group``, ``effect``, ``effect_kind``, ``q_value``...).

    Returns
    -------
    pandas.DataFrame
        Columns ``row, phenotype, group, effect, effect_kind, q_value``; rows without an effect
        (hidden, untestable) left out.
    """
    columns = ["phenotype", "group", "effect", "effect_kind", "q_value"]
    data = table[columns].copy() if len(table) else pd.DataFrame(columns=columns)
    data = data[np.isfinite(pd.to_numeric(data["effect"], errors="coerce").to_numpy(dtype=float))]
    data = data.astype({"phenotype": str, "group": str})
    groups = list(dict.fromkeys(data["group"]))
    size = data["effect"].abs().groupby(data["phenotype"], sort=False).transform("max")
    data = data.assign(
        _size=size.to_numpy(), _group=data["group"].map({g: i for i, g in enumerate(groups)}).to_numpy()
    ).sort_values(["_size", "phenotype", "_group"], ascending=[False, True, True], kind="stable")
    data["row"] = data["phenotype"] if len(groups) <= 1 else data["phenotype"] + " · " + data["group"]
    data["effect_kind"] = data["effect_kind"].map(lambda k: EFFECT_LABELS.get(k, k))
    return data[["row", *columns]].reset_index(drop=True)


def create_effect_plot(
    table: pd.DataFrame,
    *,
    colours: Mapping[str, str] | None = None,
    reference: str = "comparison",
    width: int = 460,
    row_height: int = 18,
) -> hv.Bars:
    """Horizontal bars of each phenotype's standardised effect: one labelled row per phenotype and group.

    Rows are ordered by the phenotype's largest ``|effect|`` over the groups (largest on top)
    (:func:`effect_rows`); the plot grows by ``row_height`` per row, so labels never overlap at
    any number of phenotypes (50 phenotypes × 2 groups: 100 rows, 1,860 px: it scrolls).

    Parameters
    ----------
    table
        Long comparison table: a ``group`` column plus :func:`lse_panel.analysis.compare.compare_groups`'
        columns (``phenotype``, ``effect``, ``effect_kind``, ``q_value``...).
    colours
        ``{group: colour}``.
    reference
        Name of the group everything is compared with, for the axis label.
    width, row_height
        Plot width, and height per row, in pixels.

    Returns
    -------
    holoviews.Bars
        Key dimension ``row`` (the labels, in order); values ``effect``, ``group``, ``effect_kind``,
        ``q_value`` (hover shows them).
    """
    data = effect_rows(table)
    groups = list(dict.fromkeys(data["group"]))
    colours = group_colours(groups, colours)
    rows = list(data["row"])
    # Dimension values fix the factor order (HoloViews would sort the names otherwise).
    row = hv.Dimension("row", label="phenotype", values=rows)
    effect = hv.Dimension("effect", label=f"standardised effect vs {reference}")
    colour = hv.dim("group").categorize(colours, default=REFERENCE_COLOUR) if len(data) else REFERENCE_COLOUR
    return hv.Bars(data, kdims=[row], vdims=[effect, "group", "effect_kind", "q_value"]).opts(
        invert_axes=True, invert_yaxis=True, color=colour, width=width, height=max(160, 70 + row_height * len(rows)),
        tools=["hover"], toolbar=None, title="Effect sizes (sorted by |effect|)", line_color=None,
        framewise=True, yaxis="left", fontsize={"yticks": "8.5pt"}, bar_width=0.8,
    )


# -- tables ------------------------------------------------------------------------------------
def _number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if np.isfinite(value) else "–"


def _mean_text(value: float, kind: str) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{100 * value:.1f}%" if kind == "binary" else f"{value:.4g}"


def _q_text(value: float) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def format_comparison_table(long: pd.DataFrame, *, reference: str, hidden_text: str = "hidden") -> pd.DataFrame:
    """One row per phenotype: the reference's mean, then each group's mean, effect, statistic and q-value.

    Means of binary phenotypes are prevalences (in %); categorical phenotypes have no mean (their
    effect is Cramér's V). Rows are sorted by the largest ``|effect|`` over the groups.

    Parameters
    ----------
    long
        A ``group`` column plus :func:`lse_panel.analysis.compare.compare_groups`' columns, one
        block of rows per compared group, and a boolean ``hidden`` column marking rows the privacy
        floor masks.
    reference
        Label of the group every row is compared with.
    hidden_text
        Shown in the cells of hidden rows instead of numbers.

    Returns
    -------
    pandas.DataFrame
        Text cells, indexed by phenotype; columns ``type``, ``effect kind``, ``<reference> mean``,
        then ``<group> mean``, ``<group> effect``, ``<group> statistic``, ``<group> q`` per group.
    """
    if long.empty:
        return pd.DataFrame()
    groups = list(dict.fromkeys(long["group"]))
    phenotypes = list(dict.fromkeys(long["phenotype"]))
    by = {(g, p): row for g, p, row in zip(long["group"], long["phenotype"], long.to_dict("records"))}
    hidden = long["hidden"] if "hidden" in long else pd.Series(False, index=long.index)
    hidden_by = dict(zip(zip(long["group"], long["phenotype"]), hidden))
    rows = []
    for p in phenotypes:
        first = next(by[(g, p)] for g in groups if (g, p) in by)
        kind = first["type"]
        ref_visible = [by[(g, p)] for g in groups if (g, p) in by and not hidden_by[(g, p)]]
        row: dict[str, str] = {
            "type": kind,
            "effect kind": EFFECT_LABELS.get(first["effect_kind"], first["effect_kind"]),
            f"{reference} mean": _mean_text(ref_visible[0]["mean_b"], kind) if ref_visible else hidden_text,
        }
        size = 0.0
        for g in groups:
            r = by.get((g, p))
            if r is None or hidden_by[(g, p)]:
                cells = [hidden_text] * 4
            else:
                cells = [_mean_text(r["mean_a"], kind), _number(r["effect"]), _number(r["statistic"], 4),
                         _q_text(r["q_value"])]  # fmt: skip
                if np.isfinite(r["effect"]):
                    size = max(size, abs(r["effect"]))
            row.update(dict(zip([f"{g} mean", f"{g} effect", f"{g} statistic", f"{g} q"], cells)))
        rows.append((size, p, row))
    rows.sort(key=lambda item: -item[0])
    table = pd.DataFrame([r for _, _, r in rows], index=pd.Index([p for _, p, _ in rows], name="phenotype"))
    return table


def format_accuracy_table(
    long: pd.DataFrame, *, groups: Sequence[str], reference: str, hidden: pd.Series | None = None,
    hidden_text: str = "hidden",
) -> pd.DataFrame:
    """One row per phenotype · metric · latent: each group's value and its difference from the reference.

    Parameters
    ----------
    long
        :func:`lse_panel.analysis.metrics.subgroup_metrics`' long table (``phenotype, latent, group,
        metric, value`` ...).
    groups
        Column order; ``reference`` among them.
    reference
        The group the differences ``Δ <group>`` are taken from.
    hidden
        Boolean per row of ``long``: masked by the privacy floor.
    hidden_text
        Shown instead of the value of a hidden row.

    Returns
    -------
    pandas.DataFrame
        Text cells indexed by ``phenotype · metric · latent``.
    """
    if long.empty:
        return pd.DataFrame()
    hidden = pd.Series(False, index=long.index) if hidden is None else hidden
    key = [f"{p} · {m} · {lat}" for p, m, lat in zip(long["phenotype"], long["metric"], long["latent"])]
    values = dict(zip(zip(key, long["group"]), zip(long["value"].to_numpy(dtype=float), hidden)))
    out: dict[str, dict[str, str]] = {}
    for k in dict.fromkeys(key):
        ref_value, ref_hidden = values.get((k, reference), (np.nan, True))
        row: dict[str, str] = {}
        for g in groups:
            value, is_hidden = values.get((k, g), (np.nan, False))
            row[g] = hidden_text if is_hidden else _number(value)
            if g != reference:
                row[f"Δ {g}"] = hidden_text if (is_hidden or ref_hidden) else _number(value - ref_value, 2)
        out[k] = row
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "phenotype · metric · latent"
    return table
