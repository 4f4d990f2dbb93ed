"""Rasterising a cluster-held cohort: datashader's own aggregation on each partition where it lives, images tree-added.

Part of the Dask backend (:mod:`lse_panel.cohort.dask_backend`); imported only with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from lse_panel.cohort.dask_tasks import aggregate_part, combine_aggregates

if TYPE_CHECKING:
    from distributed import Future

__all__ = ["PARTS_ATTRIBUTE", "ROWS_ATTRIBUTE", "collection"]


def collection(parts: list[Future], meta: pd.DataFrame) -> Any:
    """A persisted dask DataFrame of per-partition futures, which datashader aggregates on the workers.

    Persisted rather than built on the futures directly: datashader hands the collection's raw
    graph to the scheduler, which then loses futures it only names (measured: "lost dependencies").
    The persist step is an identity per partition and shares the partition's arrays. The frame
    carries its partitions (``lse_parts``) so :func:`_cluster_pipeline` aggregates them directly.
    """
    import dask.dataframe as dd

    frame = dd.from_delayed(parts, meta=meta, verify_meta=False).persist()
    object.__setattr__(frame, PARTS_ATTRIBUTE, list(parts))
    _register_pipeline()
    return frame


PARTS_ATTRIBUTE = "lse_parts"


def _cluster_pipeline(df: Any, schema: Any, canvas: Any, glyph: Any, summary: Any, **kwargs: Any) -> Any:
    """datashader's pipeline for a frame of :func:`_collection`: ``Canvas.points`` on each partition where it lives, tree-added.

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
    level = [client.submit(aggregate_part, part, canvas, glyph.x, glyph.y, summary, pure=False) for part in parts]
    while len(level) > 1:
        level = [client.submit(combine_aggregates, *level[i : i + 4], pure=False) for i in range(0, len(level), 4)]
    return level[0].result()


def _mergeable(agg: Any) -> bool:
    """Whether :func:`combine_aggregates` adds partition results of ``agg`` exactly: counts, counts by category,
    and a ``summary`` of a count with means (weighted by it); anything else goes through datashader's pipeline."""
    import datashader as ds

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


def _register_pipeline() -> None:
    """Route datashader's aggregation of dask frames through :func:`_cluster_pipeline` (once per process)."""
    if _DASK_PIPELINE:
        return
    import dask.dataframe as dd
    from datashader.core import bypixel
    from datashader.data_libraries.dask import dask_pipeline

    _DASK_PIPELINE.append(dask_pipeline)
    bypixel.pipeline.register(dd.DataFrame)(_cluster_pipeline)


ROWS_ATTRIBUTE = "lse_rows"
"""Attribute of a highlight frame holding its length, known on the client (``len()`` would ask the workers)."""
