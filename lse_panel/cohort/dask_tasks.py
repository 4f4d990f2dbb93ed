"""What a Dask worker runs on one partition of a cohort: plain numpy/pandas functions, no dask.

:class:`~lse_panel.cohort.dask_backend.DaskBackend` submits them, one task per partition (or one
for the slice search or a rule replay); each returns a mask that stays on the worker or a
small result that travels back (an image, counts, sums, statistics).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from lse_panel.analysis.compare import PhenotypeSums
from lse_panel.analysis.histograms import CodeMatrix, bin_codes, count_bins
from lse_panel.analysis.mask_kernels import sum_selected_rows
from lse_panel.analysis.metric_statistics import group_sufficient_statistics, metric_layout, prepare_metrics
from lse_panel.analysis.phenotype_filters import filter_mask
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.analysis.selection import box_mask, lasso_mask
from lse_panel.cohort.partitions import ColumnRef, read_columns, read_partition
from lse_panel.cohort.schema import PhenotypeSpec


def load_partition(path: str, refs: Mapping[str, tuple[ColumnRef, Sequence[str]]], index: int, bounds: Sequence[int]) -> pd.DataFrame:
    """Partition ``index``: one column per name in ``refs`` (a block's columns get the names given)."""
    columns: dict[str, np.ndarray] = {}
    for ref, names in refs.values():
        values = read_partition(Path(path), ref, index, bounds)
        if values.ndim == 1:
            columns[names[0]] = values
        else:
            columns.update({name: values[:, j] for j, name in enumerate(names)})
    return pd.DataFrame(columns, copy=False)


def load_block(path: str, ref: ColumnRef, index: int, bounds: Sequence[int]) -> np.ndarray:
    return np.ascontiguousarray(read_partition(Path(path), ref, index, bounds), dtype=np.float32)


def box(part: pd.DataFrame, kx: str, ky: str, bounds: tuple[float, ...]) -> np.ndarray:
    return box_mask(part[kx].to_numpy(), part[ky].to_numpy(), bounds, on_nan="exclude")


def lasso(part: pd.DataFrame, kx: str, ky: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return lasso_mask(part[kx].to_numpy(), part[ky].to_numpy(), xs, ys, on_nan="exclude")


def mask_of_rows(length: int, local_rows: np.ndarray) -> np.ndarray:
    mask = np.zeros(length, dtype=bool)
    mask[local_rows] = True
    return mask


def combine_masks(current: np.ndarray | None, new: np.ndarray, mode: str) -> np.ndarray:
    if mode in ("new", "add") and current is None:
        return new
    if current is None:
        return np.zeros_like(new)
    return {"new": lambda: new, "add": lambda: current | new, "intersect": lambda: current & new,
            "subtract": lambda: current & ~new}[mode]()  # fmt: skip


def restrict(part: pd.DataFrame, region: np.ndarray | None, *, specs: Mapping[str, PhenotypeSpec],
              filters: Mapping[str, Any]) -> np.ndarray:  # fmt: skip
    mask = filter_mask(part, specs, filters)
    if mask is None:
        return np.zeros(len(part), dtype=bool) if region is None else region
    return mask if region is None else region & mask


def isin_ids(part: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    own = part["id"].to_numpy()
    if (own.dtype.kind == "U") != (np.asarray(ids).dtype.kind == "U"):
        own, ids = own.astype(str), np.asarray(ids).astype(str)
    return np.isin(own, ids)


def masked_sum(block: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """float64 column sums of a latent block's rows in a group (``None``: every row).

    Summed in place over the mask: gathering 1.5M of 5M 64-d rows first took 223 ms, this 60 ms.
    """
    if mask is None:
        return block.sum(axis=0, dtype=np.float64)
    return sum_selected_rows(block, np.ascontiguousarray(mask, dtype=np.bool_))


def finite_min_max(part: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    out = np.full((len(columns), 2), np.nan)
    for j, name in enumerate(columns):
        v = np.asarray(part[name].to_numpy(), dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            out[j] = v.min(), v.max()
    return out


def phenotype_codes(part: pd.DataFrame, name: str, edges: np.ndarray | None) -> np.ndarray:
    """Bin codes of phenotype ``name`` in one partition: on ``edges`` when continuous, its category codes otherwise."""
    values = part[name].to_numpy()
    if edges is not None:
        return bin_codes(values, edges)
    return np.where(np.isfinite(values), values, -1).astype(np.int64) if values.dtype.kind == "f" else values


def bin_counts(part: pd.DataFrame, mask: np.ndarray | None = None, *, name: str, edges: np.ndarray | None, n_bins: int) -> np.ndarray:
    return count_bins(phenotype_codes(part, name, edges), mask, n_bins)


def code_matrix(part: pd.DataFrame, *, bins: Mapping[str, tuple[np.ndarray | None, int]]) -> CodeMatrix:
    """Every phenotype in ``bins`` (name → edges or ``None``, bins) binned once, kept on the worker for every selection."""
    return CodeMatrix.build({name: phenotype_codes(part, name, edges) for name, (edges, _) in bins.items()},
                            {name: n for name, (_, n) in bins.items()})  # fmt: skip


def count_codes(matrix: CodeMatrix, mask: np.ndarray) -> dict[str, np.ndarray]:
    """A group's counts per bin of every phenotype in one partition's :class:`CodeMatrix`."""
    return matrix.counts(mask)


def phenotype_layout(part: pd.DataFrame, *, specs: Mapping[str, str]) -> dict[str, Any]:
    """What fixing the cohort's phenotype shifts and code counts needs of one partition: (count, sum) or the largest code + 1."""
    out: dict[str, Any] = {}
    for name, kind in specs.items():
        values = part[name].to_numpy()
        if kind == "continuous":
            finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            out[name] = (int(finite.size), float(finite.sum(dtype=np.float64)))
        else:
            out[name] = int(values.max()) + 1 if values.size else 0
    return out


def prepare_phenotype_sums(part: pd.DataFrame, *, specs: Mapping[str, str], shift: Mapping[str, float],
                           n_codes: Mapping[str, int]) -> PhenotypeSums:  # fmt: skip
    """One partition's :class:`~lse_panel.analysis.compare.PhenotypeSums` with the cohort's shifts and codes (kept on the worker)."""
    sums = PhenotypeSums.build({name: part[name].to_numpy() for name in specs}, specs)
    return replace(sums, shift=dict(shift), n_codes=dict(n_codes))


def phenotype_rows_sum(sums: PhenotypeSums, mask: np.ndarray) -> Any:
    """One partition's :class:`~lse_panel.analysis.compare.PhenotypeStatistics` of a group."""
    return sums.rows_sum(mask)


def metric_layout_on_worker(path: str, manifest: Mapping[str, Any]) -> Any:
    """The cohort's :class:`~lse_panel.analysis.metric_statistics.MetricLayout`, from its whole columns (as in process)."""
    base = Path(path)
    tasks = prediction_tasks(manifest)
    truth = {name: read_columns(base, ColumnRef.of(manifest["phenotypes"][name])) for name in tasks}
    predictions = {kind: {name: read_columns(base, ColumnRef.of(meta)) for name, meta in per.items()}
                   for kind, per in manifest.get("predictions", {}).items()}  # fmt: skip
    return metric_layout(truth, tasks, predictions)


def prepare_partition_metrics(path: str, manifest: Mapping[str, Any], index: int, bounds: Sequence[int], layout: Any) -> Any:
    """Partition ``index``'s truth and predictions, binned with the cohort's layout (kept on the worker)."""
    base = Path(path)
    truth = {name: read_partition(base, ColumnRef.of(manifest["phenotypes"][name]), index, bounds) for name in layout.tasks}
    predictions = {kind: {name: read_partition(base, ColumnRef.of(meta), index, bounds) for name, meta in per.items()}
                   for kind, per in manifest.get("predictions", {}).items()}  # fmt: skip
    return prepare_metrics(truth, layout.tasks, predictions, layout=layout)


def metric_rows_statistics(prepared: Any, mask: np.ndarray) -> Any:
    """One partition's :class:`~lse_panel.analysis.metric_statistics.GroupStatistics` of a group."""
    return group_sufficient_statistics(prepared, {"group": np.flatnonzero(mask)})["group"]


def rows_at(mask: np.ndarray, positions: np.ndarray, start: int) -> np.ndarray:
    return np.flatnonzero(mask)[positions].astype(np.int64) + start


def nearest(part: pd.DataFrame, start: int, *, kx: str, ky: str, x: float, y: float) -> tuple[float, int]:
    dx = part[kx].to_numpy() - np.float32(x)
    dy = part[ky].to_numpy() - np.float32(y)
    d = dx * dx + dy * dy
    if d.size == 0:
        return np.inf, -1
    i = int(np.argmin(d))
    return float(d[i]), start + i


def take_frame(part: pd.DataFrame, column: str, local: np.ndarray) -> np.ndarray:
    return part[column].to_numpy()[local]


def take_block(block: np.ndarray, local: np.ndarray) -> np.ndarray:
    return block[local]


def xy_frame(part: pd.DataFrame, kx: str, ky: str, color_by: str | None, categories: Sequence[str] | None) -> pd.DataFrame:
    columns: dict[str, Any] = {"x": part[kx].to_numpy(), "y": part[ky].to_numpy()}
    if color_by is not None:
        values = part[color_by].to_numpy()
        if categories is not None:
            values = pd.Categorical.from_codes(values.astype(np.int8, copy=False), list(categories))
        columns[color_by] = values
    return pd.DataFrame(columns, copy=False)


def count_on_canvas(part: pd.DataFrame, mask: np.ndarray, canvas: Any, x: str, y: str, agg: Any) -> Any:
    """``canvas.points`` (a datashader canvas) of one partition's rows in a group, aggregated with ``agg``.

    Picking the rows costs more than counting them (5M rows, 1.5M in the group: 38 ms to pick,
    4 ms to count); counting every row with the others weighted NaN took 36 ms in all, too
    little gained to keep a second path.
    """
    picked = pd.DataFrame({"x": part[x].to_numpy()[mask], "y": part[y].to_numpy()[mask]}, copy=False)
    return canvas.points(picked, "x", "y", agg=agg)


def concat(*masks: np.ndarray) -> np.ndarray:
    return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)


def rule_rows_on_worker(path: str, steps: Sequence[Any]) -> np.ndarray:
    """:func:`~lse_panel.cohort.rules.apply_rule` over the bundle, opened (memory-mapped) on one worker."""
    from lse_panel.cohort.bundle import open_bundle
    from lse_panel.cohort.rules import apply_rule

    return apply_rule(steps, open_bundle(path))


def failures_on_worker(path: str, target: str, latent: str, policy: PrivacyPolicy, options: Mapping[str, Any]) -> pd.DataFrame:
    """The slice search (:func:`~lse_panel.cohort.slices.find_failures`) over the bundle, on one worker."""
    from lse_panel.cohort.bundle import open_bundle
    from lse_panel.cohort.slices import find_failures

    return find_failures(open_bundle(path), target, latent=latent, policy=policy, **options)


def prediction_tasks(manifest: Mapping[str, Any]) -> dict[str, str]:
    tasks: dict[str, str] = {}
    for per_kind in manifest.get("predictions", {}).values():
        for name, meta in per_kind.items():
            tasks[name] = meta["task"]
    return tasks


def take_block_xy(part: pd.DataFrame, key: str, local: np.ndarray) -> np.ndarray:
    return np.column_stack([part[f"{key}:x"].to_numpy()[local], part[f"{key}:y"].to_numpy()[local]])


def prediction_meta(manifest: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    kind, _, name = key.partition("/")
    return manifest["predictions"][kind][name]
