"""Rasterising a cluster-held cohort: datashader's own aggregation on each partition where it lives, images tree-added.

The Dask backend (:mod:`lse_panel.cohort.dask_backend`) hands the map a persisted dask frame that
carries its partitions' futures; :func:`register_cluster_pipeline` (called by the map factory when
it meets such a frame) routes datashader's aggregation of it through :func:`_cluster_pipeline`.
A selection's highlight is a :class:`~lse_panel.cohort.dask_backend.ClusterPoints` instead (masks
and partitions, no frame): :func:`aggregate_cluster_points` adds its partitions' count images.
"""

from __future__ import annotations

from typing import Any

import datashader as ds
import numpy as np
import pandas as pd

from lse_panel.cohort.dask_backend import PARTS_ATTRIBUTE, ClusterPoints

__all__ = ["aggregate_cluster_points", "aggregate_part", "combine_aggregates", "register_cluster_pipeline"]


def _cluster_pipeline(df: Any, schema: Any, canvas: Any, glyph: Any, summary: Any, **kwargs: Any) -> Any:
    """datashader's pipeline for a cluster frame: ``Canvas.points`` on each partition where it lives, tree-added.

    datashader's own dask pipeline serialises its numba-compiled functions by value on every call
    (measured 0.4–0.7 s per aggregation, whatever the data size, on the loaded 2-core machine);
    each worker here runs the ordinary pandas aggregation on its partitions and only the images
    travel (one per partition, added in a tree on the workers).
    """
    from distributed import get_client

    parts = getattr(df, PARTS_ATTRIBUTE, None)
    if parts is None or kwargs.get("antialias") or kwargs.get("cuda") or not _mergeable(summary):
        return _DASK_PIPELINE[0](df, schema, canvas, glyph, summary, **kwargs)
    client = get_client()
    return _added(client, [client.submit(aggregate_part, part, canvas, glyph.x, glyph.y, summary, pure=False) for part in parts])


def aggregate_cluster_points(points: ClusterPoints, canvas: Any) -> Any:
    """The count image (``canvas.points`` with ``ds.count()``) of a group's points left on the cluster: the map's highlight.

    One task per partition holding any of the group (:meth:`ClusterPoints.count_on`), images added.
    """
    if not len(points):
        empty = pd.DataFrame({"x": np.empty(0, np.float32), "y": np.empty(0, np.float32)})
        return canvas.points(empty, "x", "y", agg=ds.count())
    return _added(points.client, points.count_on(canvas, ds.count()))


def _added(client: Any, images: list[Any]) -> Any:
    """Partition images added: four at a time on the workers while many, the last few here (one round trip fewer)."""
    while len(images) > 4:
        images = [client.submit(combine_aggregates, *images[i : i + 4], pure=False) for i in range(0, len(images), 4)]
    return combine_aggregates(*client.gather(images))


def _mergeable(agg: Any) -> bool:
    """Whether :func:`combine_aggregates` adds partition results of ``agg`` exactly: counts, counts by category,
    and a ``summary`` of a count with means (weighted by it); anything else goes through datashader's pipeline."""
    if type(agg) is ds.count:
        return True
    if isinstance(agg, ds.by):
        return type(agg.reduction) is ds.count
    if isinstance(agg, ds.summary):
        members = dict(zip(agg.keys, agg.values))
        return type(members.get("count")) is ds.count and all(
            type(v) in (ds.count, ds.mean) for v in members.values()
        )
    return False


_DASK_PIPELINE: list[Any] = []


def register_cluster_pipeline() -> None:
    """Route datashader's aggregation of dask frames through :func:`_cluster_pipeline` (once per process)."""
    if _DASK_PIPELINE:
        return
    import dask.dataframe as dd
    from datashader.core import bypixel
    from datashader.data_libraries.dask import dask_pipeline

    _DASK_PIPELINE.append(dask_pipeline)
    bypixel.pipeline.register(dd.DataFrame)(_cluster_pipeline)


def aggregate_part(part: pd.DataFrame, canvas: Any, x: str, y: str, agg: Any) -> Any:
    """One partition's image (a worker task)."""
    return canvas.points(part, x, y, agg=agg)


def combine_aggregates(*aggs: Any) -> Any:
    """Partition aggregates of one canvas added: counts sum, a ``summary`` mean is weighted by its count."""
    import xarray as xr

    first = aggs[0]
    if isinstance(first, xr.Dataset):
        count = np.sum([a["count"].data for a in aggs], axis=0)
        out = first.copy(deep=True)
        out["count"].data[...] = count
        for name in first.data_vars:
            if name == "count":
                continue
            weighted = np.sum([np.nan_to_num(a[name].data) * a["count"].data for a in aggs], axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name].data[...] = np.where(count > 0, weighted / np.where(count > 0, count, 1), np.nan)
        return out
    return first.copy(data=np.sum([a.data for a in aggs], axis=0).astype(first.dtype))
