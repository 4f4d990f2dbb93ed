"""HoloViews factories for prediction accuracy: forest plots of intervals, a change heatmap, predicted vs true."""

from __future__ import annotations

from typing import Mapping, Sequence

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh options these factories set)
import numpy as np
import pandas as pd

from lse_panel.palette import HIGHLIGHT, LATENT_COLORS, OTHER_LATENT_COLOUR, REFERENCE_COLOUR

LOWER_IS_BETTER = frozenset({"mae"})
"""Metrics where a smaller value is better; their change is sign-flipped so colour always means better/worse."""

METRIC_LABELS = {"r2": "R²", "mae": "MAE", "auroc": "AUROC", "balanced_accuracy": "bal. acc."}
"""Display names of the metrics, in the order rows are listed (a phenotype's task picks which apply)."""
GROUP_ORDER = ("selection", "comparison", "cohort")
COHORT_MARKER = "#1f3a5f"
"""The whole cohort's estimates in accuracy plots: dark blue, apart from the comparison group's grey."""
CHANGE_CMAP = "RdBu"
"""Diverging: red where the selection does worse than the cohort, blue where it does better."""


def _format(value: float, low: float, high: float) -> str:
    if not np.isfinite(value):
        return "–"
    text = f"{value:.3g}"
    if np.isfinite(low) and np.isfinite(high):
        text += f" [{low:.3g}, {high:.3g}]"
    return text


def _row_label(phenotype: str, metric: str) -> str:
    return f"{phenotype} · {METRIC_LABELS.get(metric, metric)}"


def metric_change(long: pd.DataFrame, *, group: str = "selection", reference: str = "cohort") -> pd.DataFrame:
    """One row per (phenotype, metric, latent): the group's value, the reference's, and the signed change.

    ``change`` is positive where ``group`` does better than ``reference``: the plain difference
    for R², AUROC and balanced accuracy; for MAE (lower is better) the relative reduction
    ``(reference − group) / reference``, so rows of different units share one colour scale.

    Parameters
    ----------
    long
        Output of :func:`lse_panel.analysis.metrics.subgroup_metrics` (``phenotype, task, latent,
        group, metric, value, ci_low, ci_high, n``), holding ``group`` and ``reference``.
    group, reference
        The two groups compared.

    Returns
    -------
    pandas.DataFrame
        Columns ``phenotype, metric, latent, row, value, reference, change`` plus text columns for
        each group in :data:`GROUP_ORDER` present (``"0.81 [0.79, 0.83]"``) and ``n`` of ``group``.
        Only the (phenotype, metric, latent) combinations ``long`` holds: a regression phenotype
        gets R² and MAE rows, a classification one AUROC and balanced accuracy, none both.
    """
    keys = ["phenotype", "metric", "latent"]
    wide = long.pivot_table(index=keys, columns="group", values=["value", "ci_low", "ci_high", "n"], aggfunc="first",
                            dropna=False, sort=False)
    # dropna=False keeps the rows whose values are all NaN (an empty or masked group), but also
    # spans the product of phenotypes × metrics: keep only the combinations the table holds.
    present = pd.MultiIndex.from_frame(long[keys].drop_duplicates())
    wide = wide[wide.index.isin(present)]
    out = pd.DataFrame(index=wide.index).reset_index()
    # Keep the phenotypes and latents in the order the table lists them.
    for col in ("phenotype", "latent"):
        out[col] = pd.Categorical(out[col], categories=list(dict.fromkeys(long[col])), ordered=True)
    metrics = [m for m in METRIC_LABELS if m in set(long["metric"])]
    metrics += [m for m in dict.fromkeys(long["metric"]) if m not in METRIC_LABELS]
    out["metric"] = pd.Categorical(out["metric"], categories=metrics, ordered=True)

    def column(field: str, g: str) -> np.ndarray:
        if (field, g) in wide.columns:
            return wide[(field, g)].to_numpy(dtype=np.float64)
        return np.full(len(wide), np.nan)

    value, ref = column("value", group), column("value", reference)
    lower = out["metric"].isin(LOWER_IS_BETTER).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(lower, (ref - value) / np.abs(ref), value - ref)
    out["row"] = [_row_label(p, m) for p, m in zip(out["phenotype"], out["metric"])]
    out["value"] = value
    out["reference"] = ref
    out["change"] = change
    out["n"] = column("n", group)
    for g in GROUP_ORDER:
        if g in set(long["group"]):
            out[g] = [_format(v, lo, hi) for v, lo, hi in zip(column("value", g), column("ci_low", g), column("ci_high", g))]
    return out.sort_values(["phenotype", "metric", "latent"]).reset_index(drop=True)


def format_metric_table(long: pd.DataFrame) -> pd.DataFrame:
    """A compact table: one row per phenotype and metric, a column per (latent, group), values with intervals.

    Parameters
    ----------
    long
        Output of :func:`lse_panel.analysis.metrics.subgroup_metrics`.

    Returns
    -------
    pandas.DataFrame
        Index ``phenotype · metric``; two-level columns (latent, group); cells like ``"0.81 [0.79, 0.83]"``.
    """
    if long.empty:
        return pd.DataFrame()
    latents = list(dict.fromkeys(long["latent"]))
    groups = [g for g in GROUP_ORDER if g in set(long["group"])] + [
        g for g in dict.fromkeys(long["group"]) if g not in GROUP_ORDER
    ]
    frame = long.assign(
        row=[_row_label(p, m) for p, m in zip(long["phenotype"], long["metric"])],
        text=[_format(v, lo, hi) for v, lo, hi in zip(long["value"], long["ci_low"], long["ci_high"])],
    )
    table = frame.pivot_table(index="row", columns=["latent", "group"], values="text", aggfunc="first", sort=False)
    columns = [(lat, g) for lat in latents for g in groups if (lat, g) in table.columns]
    table = table.reindex(columns=pd.MultiIndex.from_tuples(columns, names=["latent", "group"]))
    table.index.name = None
    return table


def create_metric_heatmap(
    long: pd.DataFrame | hv.streams.Pipe,
    *,
    group: str = "selection",
    reference: str = "cohort",
    width: int = 420,
    row_height: int = 26,
) -> hv.Overlay:
    """Heatmap of where the embedding does worse (red) or better (blue) in a group than in the reference.

    Rows are phenotype · metric, columns latent kinds side by side; each cell is labelled with
    the group's value, and hovering shows the value with its interval in every group.

    Parameters
    ----------
    long
        Output of :func:`lse_panel.analysis.metrics.subgroup_metrics` holding ``group`` and ``reference``,
        or a :class:`holoviews.streams.Pipe` sending such tables: the plot is then built once and
        each new table only replaces its data (keep the phenotypes and latents the same).
    group, reference
        The change shown is ``group`` relative to ``reference`` (see :func:`metric_change`).
    width, row_height
        Plot width and the height of one row, in pixels.

    Returns
    -------
    holoviews.Overlay or holoviews.DynamicMap
        A :class:`holoviews.HeatMap` of the change with :class:`holoviews.Labels` on top.
    """
    if isinstance(long, hv.streams.Pipe):
        return hv.DynamicMap(
            lambda data: create_metric_heatmap(data, group=group, reference=reference, width=width, row_height=row_height),
            streams=[long],
        )
    data = metric_change(long, group=group, reference=reference)
    text_cols = [g for g in GROUP_ORDER if g in data.columns]
    finite = data["change"].to_numpy()
    finite = finite[np.isfinite(finite)]
    bound = float(np.abs(finite).max()) if finite.size else 0.0
    bound = bound if bound > 0 else 0.05
    table = pd.DataFrame(
        {
            "latent": data["latent"].astype(str),
            "row": data["row"],
            "change": data["change"],
            "label": [f"{v:.2f}" if np.isfinite(v) else "–" for v in data["value"]],
            "n": data["n"],
            **{c: data[c] for c in text_cols},
        }
    )
    vdims = [hv.Dimension("change", label=f"{group} vs {reference} (+ better)"), "n", *text_cols]
    heatmap = hv.HeatMap(table, kdims=["latent", "row"], vdims=vdims).opts(
        cmap=CHANGE_CMAP, clim=(-bound, bound), colorbar=True, tools=["hover"], width=width,
        height=max(140, 60 + row_height * table["row"].nunique()), invert_yaxis=True, xaxis="top",
        xlabel="", ylabel="", toolbar=None, title=f"{group} vs {reference}", framewise=True,
    )
    labels = hv.Labels(table, kdims=["latent", "row"], vdims="label").opts(text_font_size="8pt", text_color="black")
    return heatmap * labels


FOREST_METRICS = ("r2", "auroc")
"""Metrics drawn as forest plots: each shares one scale across phenotypes (MAE has each phenotype's units)."""

FOREST_GROUPS = {"selection": HIGHLIGHT, "comparison": REFERENCE_COLOUR, "cohort": COHORT_MARKER}
"""The groups of a forest plot, top to bottom within a row, and their colours."""


def forest_rows(long: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """One point per (phenotype, latent, group) of ``metric``, at its row's height, for :func:`create_forest_plot`.

    Parameters
    ----------
    long
        Metrics in long format (``phenotype, latent, group, metric, value, ci_low, ci_high, n``).
    metric
        The metric drawn.

    Returns
    -------
    frame : pandas.DataFrame
        ``y, group, phenotype, latent, value, ci_low, ci_high, n``: row ``i`` (``phenotype · latent``,
        in the table's order) at ``y = i``, the groups of :data:`FOREST_GROUPS` spread within it.
    labels : list of str
        The rows' labels, ``y = 0`` first.
    """
    part = long[long["metric"] == metric]
    keys = list(dict.fromkeys(zip(part["phenotype"], part["latent"])))
    position = {key: i for i, key in enumerate(keys)}
    groups = [g for g in FOREST_GROUPS if g in set(part["group"])]
    offset = {g: (i - (len(groups) - 1) / 2) * 0.26 for i, g in enumerate(groups)}
    part = part[part["group"].isin(groups)]
    frame = pd.DataFrame({
        "y": [position[(p, lat)] + offset[g] for p, lat, g in zip(part["phenotype"], part["latent"], part["group"])],
        "group": part["group"].to_numpy(), "phenotype": part["phenotype"].to_numpy(), "latent": part["latent"].to_numpy(),
        "value": part["value"].to_numpy(dtype=float), "ci_low": part["ci_low"].to_numpy(dtype=float),
        "ci_high": part["ci_high"].to_numpy(dtype=float), "n": part["n"].to_numpy(),
    })  # fmt: skip
    return frame, [f"{p} · {lat}" for p, lat in keys]


def forest_legend(groups: Sequence[str] = tuple(FOREST_GROUPS)) -> str:
    """Markdown/HTML naming the forest plots' group colours, e.g. ``● selection ● comparison ● cohort``."""
    return " ".join(
        f'<span style="color:{FOREST_GROUPS[g]}">●</span> {g}' for g in groups if g in FOREST_GROUPS
    )


def create_forest_plot(
    long: pd.DataFrame | hv.streams.Pipe,
    *,
    metric: str,
    labels: list[str] | None = None,
    width: int = 430,
    row_height: int = 20,
) -> hv.Overlay | hv.DynamicMap:
    """A forest plot of one metric: a row per phenotype and latent kind, each group's estimate with its interval.

    Within a row the selection (magenta), its comparison group (grey) and the whole cohort (dark
    blue) are drawn one above the other, each a point on its interval's line; light bands group
    the rows of one phenotype. Hover names the row, group, value, interval and subjects; the
    colours are explained once above the plots (:func:`forest_legend`), not in each.

    Parameters
    ----------
    long
        Metrics in long format with intervals (``ci_low``/``ci_high``; NaN draws the point alone),
        or a :class:`holoviews.streams.Pipe` sending such tables: the plot is then built once (pass
        ``labels``, the rows, which must not change) and each table only replaces its data.
    metric
        The metric drawn, e.g. ``"r2"`` or ``"auroc"``.
    labels
        With a Pipe: the rows' labels (:func:`forest_rows` of a first table).
    width, row_height
        Plot width, and height per row, in pixels.

    Returns
    -------
    holoviews.Overlay or holoviews.DynamicMap
    """
    if isinstance(long, hv.streams.Pipe):
        fixed = list(labels or [])
        return hv.DynamicMap(
            lambda data: create_forest_plot(data, metric=metric, labels=fixed, width=width, row_height=row_height),
            streams=[long],
        )
    frame, rows = forest_rows(long, metric)
    rows = labels or rows
    name = METRIC_LABELS.get(metric, metric)
    x = hv.Dimension("value", label=name)
    blocks = list(dict.fromkeys(label.split(" · ")[0] for label in rows))
    spans = [(i - 0.5, i + 0.5) for i, label in enumerate(rows) if blocks.index(label.split(" · ")[0]) % 2 == 0]
    layers: list[hv.Element] = [
        hv.HSpans(spans, kdims=["y0", "y1"]).opts(color="#eef2f6", line_width=0) if spans else hv.HSpans([])
    ]
    for group, colour in FOREST_GROUPS.items():
        part = frame[frame["group"] == group]
        layers.append(
            hv.Segments(part, kdims=["ci_low", "y", "ci_high", "y"]).opts(color=colour, line_width=2)
        )
        layers.append(
            hv.Scatter(part, kdims=[x], vdims=["y", "group", "phenotype", "latent", "ci_low", "ci_high", "n"],
                       label=group).opts(color=colour, size=6, tools=["hover"], line_color="white")  # fmt: skip
        )
    height = max(140, 80 + row_height * len(rows))
    return hv.Overlay(layers).opts(
        width=width, height=height, title=f"{name}, 95% intervals", yticks=list(enumerate(rows)),
        ylim=(-0.6, len(rows) - 0.4), invert_yaxis=True, ylabel="", xlabel=name, show_legend=False,
        toolbar=None, show_grid=True, fontsize={"yticks": "8.5pt"}, framewise=True,
    )


def _finite_sample(true: np.ndarray, pred: np.ndarray, mask_labels: bool) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(true)
    p = np.asarray(pred, dtype=np.float64)
    ok = np.isfinite(p) & (((t == 0) | (t == 1)) if mask_labels else np.isfinite(t.astype(np.float64)))
    return t[ok], p[ok]


def _predicted_vs_true_panel(
    truth: np.ndarray, pred: np.ndarray, latent: str, *, task: str, phenotype: str, units: str,
    categories: Sequence[str], threshold: float, width: int, height: int,
) -> hv.Overlay:
    unit = f" ({units})" if units else ""
    color = LATENT_COLORS.get(latent, OTHER_LATENT_COLOUR)
    if task == "regression":
        t, p = _finite_sample(truth, pred, mask_labels=False)
        t = t.astype(np.float64)
        true_dim = hv.Dimension("true", label=f"true {phenotype}{unit}")
        pred_dim = hv.Dimension("predicted", label=f"predicted{unit}")
        scatter = hv.Scatter((t, p), true_dim, pred_dim, label=latent).opts(
            color=color, size=3, alpha=0.5, tools=["hover"], framewise=True
        )
        return (scatter * hv.Slope(1, 0).opts(color="black", line_dash="dashed", line_width=1)).opts(
            title=f"{latent}: n={t.size:,}", width=width, height=height, show_legend=False, toolbar=None
        )
    if task == "classification":
        t, p = _finite_sample(truth, pred, mask_labels=True)
        names = list(categories) if len(categories) == 2 else ["0", "1"]
        cls = np.asarray(names, dtype=object)[t.astype(np.int64)] if t.size else np.empty(0, dtype=object)
        frame = pd.DataFrame({"true": cls, "score": p})
        true_dim = hv.Dimension("true", label=f"true {phenotype}")
        score_dim = hv.Dimension("score", label="predicted P(class 1)", range=(0, 1))
        box = hv.BoxWhisker(frame, true_dim, score_dim).opts(box_fill_color=color, box_alpha=0.6, outlier_alpha=0.3)
        return (box * hv.HLine(threshold).opts(color="black", line_dash="dashed", line_width=1)).opts(
            title=f"{latent}: n={t.size:,}", width=width, height=height, toolbar=None
        )
    raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")


def create_predicted_vs_true_plot(
    truth: np.ndarray | hv.streams.Pipe,
    predictions: Mapping[str, np.ndarray] | Sequence[str],
    *,
    task: str,
    phenotype: str,
    units: str = "",
    categories: Sequence[str] = (),
    threshold: float = 0.5,
    width: int = 260,
    height: int = 240,
) -> hv.Layout:
    """Predicted against true values of one phenotype, one panel per latent kind, side by side.

    Pass a capped sample: this draws every point it gets.

    Parameters
    ----------
    truth
        True values of the subjects (0/1 labels for a classification); or a
        :class:`holoviews.streams.Pipe` sending ``{"truth": array, "predictions": {latent: array}}``,
        so a new selection only replaces the data.
    predictions
        Latent kind → predictions of the same subjects (class-1 probability for a classification);
        with a Pipe, the latent kinds to draw.
    task
        ``"regression"``: a scatter with the identity line; ``"classification"``: the score's
        distribution in each true class, with the decision threshold.
    phenotype, units
        Axis labels.
    categories
        Names of classes 0 and 1.
    threshold
        Decision threshold drawn on classification panels.
    width, height
        Size of each panel.

    Returns
    -------
    holoviews.Layout
        One panel (or DynamicMap, with a Pipe) per latent kind.
    """
    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    options = dict(
        task=task, phenotype=phenotype, units=units, categories=categories, threshold=threshold, width=width, height=height
    )
    if isinstance(truth, hv.streams.Pipe):
        empty = np.empty(0)

        def panel(latent: str) -> hv.DynamicMap:
            def build(data: Mapping | None) -> hv.Overlay:
                data = data or {}
                pred = (data.get("predictions") or {}).get(latent, empty)
                return _predicted_vs_true_panel(data.get("truth", empty), pred, latent, **options)

            return hv.DynamicMap(build, streams=[truth])

        panels = [panel(latent) for latent in predictions]
    else:
        panels = [
            _predicted_vs_true_panel(truth, pred, latent, **options) for latent, pred in dict(predictions).items()
        ]
    return hv.Layout(panels).cols(max(len(panels), 1))
