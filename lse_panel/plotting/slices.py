"""Found slices for display: the failures table, one slice's metrics per latent kind, a region's outline on its map."""

from __future__ import annotations

import html
import math
from typing import Any, Mapping

import holoviews as hv
import numpy as np
import pandas as pd

from lse_panel.analysis.metrics import METRICS
from lse_panel.palette import OUTLINE_COLOUR
from lse_panel.plotting.accuracy import METRIC_LABELS

__all__ = [
    "TEXT_COLUMNS",
    "create_region_outline",
    "format_latent_metrics",
    "format_slice_table",
    "primary_metric",
    "side_by_side_title",
]

TEXT_COLUMNS = ("latent", "slice", "kind", "gap [interval]", "q")
"""The text columns of :func:`format_slice_table` (the others are numbers)."""


def primary_metric(task: str) -> str:
    """The metric a failures table shows first: MAE for regression (what the search's loss averages), else AUROC."""
    return "mae" if task == "regression" else "auroc"


def side_by_side_title(metric: str, kind: str) -> str:
    """Column title of latent kind ``kind``'s metric in the slice, HTML-escaped.

    Latent kind names come from the bundle (an imported one names its own), and a table widget's
    header may be rendered as HTML, so the name is escaped here, where it becomes a title.
    """
    return f"{METRIC_LABELS.get(metric, metric)} · {html.escape(str(kind))}"


def _q_text(q: float) -> str:
    if not math.isfinite(q):
        return ""
    return "< 1e-300" if q < 1e-300 else f"{q:.1e}"


def _signed(value: float) -> str:
    return f"{value:+.3g}" if math.isfinite(value) else "—"


def format_slice_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The found slices as a table to read: one row per slice, in the order of ``frame``.

    Parameters
    ----------
    frame
        :func:`~lse_panel.cohort.slices.find_failures`'s table (one latent kind, or several combined).

    Returns
    -------
    pandas.DataFrame
        Columns ``latent`` (the kind searched), ``#`` (the slice's rank there), ``slice`` (its rule),
        ``n``, the task's main metric (:func:`primary_metric`) in the slice and in the rest for the
        searched kind (``MAE in slice``, ``MAE in rest``), ``gap [interval]`` (of the loss), ``q``;
        then that metric in the slice for every latent kind, side by side (titles from
        :func:`side_by_side_title`); then ``kind`` (phenotype or region) and ``tried`` (slices tried
        in that kind's search). Rule text is left as it is: show it as plain text.
    """
    metric = primary_metric(frame.attrs.get("task", "regression"))
    label = METRIC_LABELS.get(metric, metric)
    kinds = [c[len(metric) + 1 :] for c in frame.columns if c.startswith(f"{metric}_") and not c.startswith(f"{metric}_rest_")]
    rows = frame.to_dict("records")
    table = pd.DataFrame({
        "latent": [str(r["latent"]) for r in rows],
        "#": np.asarray([r["rank"] for r in rows], dtype=np.int64),
        "slice": [str(r["rule"]) for r in rows],
        "n": np.asarray([r["n"] for r in rows], dtype=np.int64),
        f"{label} in slice": np.asarray([r.get(f"{metric}_{r['latent']}", np.nan) for r in rows], dtype=np.float64),
        f"{label} in rest": np.asarray([r.get(f"{metric}_rest_{r['latent']}", np.nan) for r in rows], dtype=np.float64),
        "gap [interval]": [
            f"{_signed(r['gap'])} [{_signed(r['gap_ci_low'])}, {_signed(r['gap_ci_high'])}]" for r in rows
        ],
        "q": [_q_text(float(r["q_value"])) for r in rows],
    })  # fmt: skip
    for kind in kinds:
        table[side_by_side_title(metric, kind)] = np.asarray(frame[f"{metric}_{kind}"], dtype=np.float64)
    table["kind"] = [str(r["kind"]) for r in rows]
    table["tried"] = np.asarray([r["n_tried"] for r in rows], dtype=np.int64)
    return table


def format_latent_metrics(row: Mapping[str, Any], task: str) -> pd.DataFrame:
    """Which latent kind fails where: one slice's metrics in the slice and in the rest, per latent kind.

    Parameters
    ----------
    row
        One row of :func:`~lse_panel.cohort.slices.find_failures`'s table.
    task
        ``"regression"`` or ``"classification"`` (the table's ``attrs["task"]``).

    Returns
    -------
    pandas.DataFrame
        Indexed by latent kind; for each metric of the task, its value in the slice, in the rest,
        and the slice minus the rest. NaN where the privacy floor hid a value.
    """
    metrics = METRICS[task]
    kinds = [k[len(f"{metrics[0]}_rest_") :] for k in row if str(k).startswith(f"{metrics[0]}_rest_")]
    out: dict[str, list[float]] = {}
    for metric in metrics:
        label = METRIC_LABELS.get(metric, metric)
        inside = [float(row.get(f"{metric}_{k}", np.nan)) for k in kinds]
        rest = [float(row.get(f"{metric}_rest_{k}", np.nan)) for k in kinds]
        out[f"{label} in slice"] = inside
        out[f"{label} in rest"] = rest
        out[f"{label} difference"] = [a - b for a, b in zip(inside, rest)]
    return pd.DataFrame(out, index=pd.Index(kinds, name="latent")).round(3)


def create_region_outline(data: Mapping[str, Any] | None = None, *, x: str = "x", y: str = "y") -> hv.Path:
    """A found region's polygon drawn on its map: a closed outline, or nothing.

    Parameters
    ----------
    data
        ``{"xs": [...], "ys": [...]}`` vertices, or ``None``/empty for nothing drawn.
    x, y
        The map's coordinate dimension names (those of the latent view it overlays).
    """
    xs = np.asarray((data or {}).get("xs", ()), dtype=np.float64).ravel()
    ys = np.asarray((data or {}).get("ys", ()), dtype=np.float64).ravel()
    if xs.size < 3 or xs.size != ys.size:
        # No path at all rather than one of zero points: Bokeh cannot deserialise an empty MultiLine.
        return hv.Path([], [x, y]).opts(color=OUTLINE_COLOUR, line_width=2.5)
    closed = np.column_stack([np.append(xs, xs[0]), np.append(ys, ys[0])])
    return hv.Path([closed], [x, y]).opts(color=OUTLINE_COLOUR, line_width=2.5)
