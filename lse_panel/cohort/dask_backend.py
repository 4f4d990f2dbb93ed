"""The Dask backend: the cohort persisted on a ``distributed`` cluster, one pandas partition per row range.

Each partition (ids, phenotypes, every projection's ``x``/``y``) is loaded once by a worker, from
its Parquet part or its slice of the ``.npy`` columns (:mod:`lse_panel.cohort.partitions`), and
stays there. A selection is a :class:`DaskGroup`: one boolean mask per partition, computed and
kept on the worker holding the partition, plus the count. Box, lasso, set operations, phenotype
filters and saved-subgroup joins make new masks where the data lives; rasterising, latent sums,
histograms and comparisons run per partition and only their small results (images, sums,
counts, moments) come back. The accuracy metrics need every subject in score order (AUROC), so
they run on one worker from the groups' masks, through the same
:func:`~lse_panel.analysis.accuracy.selection_metrics` the in-process backend calls (the seam where
mergeable per-partition metric statistics will slot in).

Workers need lse-panel installed and the bundle at the same path (shared storage).
"""

from __future__ import annotations

import os
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from lse_panel.analysis.histograms import DEFAULT_BINS, Binning, histogram_edges
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.cohort import dask_tasks as tasks
from lse_panel.cohort.backend import DataBackend, PhenotypeSource, padded_extent
from lse_panel.cohort.dask_sums import DaskLatentSums, DaskMetricSums, DaskPhenotypeSums, RemoteBinning
from lse_panel.cohort.bundle import Cohort, read_manifest
from lse_panel.cohort.partitions import ColumnRef, layout_of, read_columns, row_bounds
from lse_panel.cohort.schema import PhenotypeSpec, modality_from_json

if TYPE_CHECKING:
    from distributed import Client, Future

    from lse_panel.cohort.subgroups import SubgroupStore

__all__ = ["ClusterPoints", "DaskBackend", "DaskGroup", "RemoteColumn", "connect", "run_tasks"]

MIN_PARTITION_ROWS = 100_000
"""Fewest rows per partition of an ``.npy`` bundle served on a cluster, unless ``partition_rows`` says otherwise."""


def worker_slots(client: Client) -> list[str]:
    """One worker address per thread of the cluster, workers interleaved (round-robin placement)."""
    workers = client.scheduler_info().get("workers", {})
    threads = {address: max(1, int(info.get("nthreads", 1))) for address, info in sorted(workers.items())}
    slots = []
    for turn in range(max(threads.values(), default=0)):
        slots += [address for address, n in threads.items() if turn < n]
    return slots


def connect(dask: str | Client, *, n_workers: int | None = None, memory_limit: str = "auto") -> Client:
    """A client of the cluster ``dask`` names: ``"local"`` starts a ``LocalCluster`` sized to this machine.

    Parameters
    ----------
    dask
        ``"local"``, a scheduler address (``tcp://host:8786``), or a ``Client`` (returned as is).
    n_workers
        Workers of a local cluster (default: one per core this process may use, one thread each:
        numba and numpy kernels release the GIL, but torch and pandas steps do not).
    memory_limit
        Per-worker memory limit of a local cluster.

    Raises
    ------
    ValueError
        The address cannot be reached, named, with the command that starts a scheduler.
    """
    from distributed import Client, LocalCluster

    if isinstance(dask, Client):
        return dask
    if dask == "local":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        cluster = LocalCluster(
            n_workers=n_workers or cores, threads_per_worker=1, processes=True, memory_limit=memory_limit,
            dashboard_address=None,
        )
        return Client(cluster)
    try:
        return Client(dask, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise ValueError(
            f"--dask {dask}: no Dask scheduler answers there ({exc}). Start one with `dask scheduler` and "
            "workers with `dask worker ADDRESS` (see the README), or use --dask local."
        ) from None


def run_tasks(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]],
    *,
    client: Client | None = None,
    progress: bool = True,
    desc: str = "",
    sizes: Sequence[int] | None = None,
    retries: int = 2,
) -> list[Any]:
    """``fn(*args, **kwargs)`` for every call: as tasks on a cluster, or one after another here; with progress.

    On a cluster a task whose worker dies is rerun on another (Dask's own bookkeeping); one that
    raises is retried ``retries`` times. Results come back in completion order.

    Parameters
    ----------
    fn
        A module-level function (workers import it).
    calls
        ``(args, kwargs)`` per task.
    client
        A ``distributed.Client``, or ``None`` to run here.
    progress, desc
        A tqdm bar, advanced by each call's size.
    sizes
        What each call counts for on the bar (rows); 1 each by default.
    """
    from tqdm.auto import tqdm

    sizes = list(sizes) if sizes is not None else [1] * len(calls)
    results = []
    with tqdm(total=sum(sizes), desc=desc, unit="subj" if sizes and max(sizes) > 1 else "task", disable=not progress,
              smoothing=0.1) as bar:  # fmt: skip
        if client is None:
            for (args, kwargs), size in zip(calls, sizes):
                results.append(fn(*args, **kwargs))
                bar.update(size)
            return results
        from distributed import as_completed

        futures = {client.submit(fn, *args, pure=False, retries=retries, **kwargs): size
                   for (args, kwargs), size in zip(calls, sizes)}  # fmt: skip
        for future in as_completed(futures):
            results.append(future.result())
            bar.update(futures[future])
    return results


# -- the client side ----------------------------------------------------------------------------------
class DaskGroup:
    """A group kept on the cluster: one boolean mask per partition (on the worker holding it) and the counts.

    Implements :class:`~lse_panel.analysis.groups.GroupHandle`. Its masks are released when the
    last reference to it goes (a new selection replaces the old one).

    Attributes
    ----------
    masks
        One ``Future`` per partition.
    counts
        Members per partition.
    size
        Members in all.
    """

    def __init__(self, backend: DaskBackend, masks: list[Future], counts: Sequence[int]) -> None:
        self._backend = backend
        self.masks = masks
        self.counts = np.asarray(counts, dtype=np.int64)
        self.size = int(self.counts.sum())
        self._complement: DaskGroup | None = None
        self.highlights: dict[str, Any] = {}
        self.cache: dict[Any, Any] = {}  # statistics of this group already fetched (histograms)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"DaskGroup(size={self.size:,}, partitions={len(self.masks)})"

    def complement(self) -> DaskGroup:
        """Everyone not in this group (computed on the workers once, then kept)."""
        if self._complement is None:
            self._complement = self._backend._map_group(np.logical_not, self.masks)
        return self._complement

    def everyone(self) -> DaskGroup:
        """The whole cohort."""
        return self._backend.everyone


PARTS_ATTRIBUTE = "lse_parts"
"""Attribute of a map frame holding its partitions' futures (:mod:`lse_panel.plotting.dask_raster` aggregates them)."""

class ClusterPoints:
    """A group's points on one projection, left on the cluster: what the map's highlight counts where they live.

    ``len()`` is the group's size, known here without a round trip. :meth:`count_on` counts the
    points on a canvas with one task per partition holding any (each picks its rows by the
    group's mask), so no frame of the selected points is built as a task of its own; a count the
    backend started when the selection was made (:meth:`DaskBackend.restrict`) is used if it was
    for the same canvas.
    """

    def __init__(self, backend: DaskBackend, group: DaskGroup, key: str) -> None:
        self._canvases = backend.canvases
        self.client = backend.client
        self.parts = backend.parts
        self.masks = group.masks
        self.counts = group.counts
        self.key = key
        self.x, self.y = f"{key}:x", f"{key}:y"
        self._started: dict[tuple[Any, ...], list[Future]] = {}

    def __len__(self) -> int:
        return int(self.counts.sum())

    def __repr__(self) -> str:
        return f"ClusterPoints({len(self):,} points of {self.key!r})"

    def count_on(self, canvas: Any, agg: Any) -> list[Future]:
        """Futures of ``canvas.points(..., agg=agg)`` of each partition's points, for the partitions holding any."""
        self._canvases.drawn(self.key, canvas, agg)
        found = self._started.pop(canvas_key(canvas), None)
        return found if found is not None else self._submit(canvas, agg)

    def start(self, canvas: Any, agg: Any) -> None:
        """Start counting on ``canvas`` now, for :meth:`count_on` to find."""
        self._started[canvas_key(canvas)] = self._submit(canvas, agg)

    def _submit(self, canvas: Any, agg: Any) -> list[Future]:
        return [self.client.submit(tasks.count_on_canvas, self.parts[i], self.masks[i], canvas, self.x, self.y, agg, pure=False)
                for i, count in enumerate(self.counts) if count]  # fmt: skip


def canvas_key(canvas: Any) -> tuple[Any, ...]:
    """What makes two datashader canvases count alike: size and ranges."""
    return (canvas.plot_width, canvas.plot_height, tuple(canvas.x_range), tuple(canvas.y_range))


class SteadyCanvases:
    """Per projection, the canvas its highlight was last counted on, when the last two counts used the same one.

    A new selection's highlights are started on these (:meth:`DaskBackend.restrict`) so the two
    maps' counts run on the workers at once while the client draws the first; measured at 10M, a
    box redrawn in two views went from 177 to 132 ms (2 workers, quiet 2-core machine). Only a
    canvas used twice running counts, so sessions of one server at different zooms start nothing
    that would go unused.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[tuple[Any, ...], Any, Any, bool]] = {}
        self._lock = threading.Lock()

    def drawn(self, key: str, canvas: Any, agg: Any) -> None:
        with self._lock:
            found = self._last.get(key)
            self._last[key] = (canvas_key(canvas), canvas, agg, found is not None and found[0] == canvas_key(canvas))

    def steady(self) -> list[tuple[str, Any, Any]]:
        with self._lock:
            return [(key, canvas, agg) for key, (_, canvas, agg, steady) in self._last.items() if steady]


def collection(parts: list[Future], meta: pd.DataFrame) -> Any:
    """A persisted dask DataFrame of per-partition futures, which the map aggregates on the workers.

    Persisted rather than built on the futures directly: datashader hands the collection's raw
    graph to the scheduler, which then loses futures it only names (measured: "lost dependencies").
    The persist step is an identity per partition and shares the partition's arrays. The frame
    carries its partitions (:data:`PARTS_ATTRIBUTE`) so the plotting layer's cluster pipeline
    (:mod:`lse_panel.plotting.dask_raster`) aggregates them where they live.
    """
    import dask.dataframe as dd

    frame = dd.from_delayed(parts, meta=meta, verify_meta=False).persist()
    object.__setattr__(frame, PARTS_ATTRIBUTE, list(parts))
    return frame


class RemoteColumn:
    """A column of a cluster-held cohort: shape and dtype here, values on the workers.

    Indexing with a row, a list or an array of rows fetches those rows (a pane's sample, an
    explicit save); turning it into a whole array raises, so no pane copies a column to the
    serving process by accident.
    """

    def __init__(self, backend: DaskBackend, column: str | tuple[str, str], shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._backend = backend
        self._column = column
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.ndim = len(shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> Any:
        scalar = np.isscalar(rows) or (isinstance(rows, np.ndarray) and rows.ndim == 0)
        if isinstance(rows, slice):
            rows = np.arange(self.shape[0])[rows]
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        values = self._backend.take(self._column, rows)
        return values[0] if scalar else values

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            f"column {self._column!r} stays on the Dask cluster; ask the backend (state.backend) for what the pane "
            "needs (a statistic, a sample of rows) instead of the whole column."
        )


class DaskBackend(DataBackend):
    """A bundle persisted on a Dask cluster; see the module docstring.

    Parameters
    ----------
    path
        The bundle (any layout), at a path every worker can read.
    client
        A ``distributed.Client`` (see :func:`connect`).
    partition_rows
        Rows per partition of an ``.npy`` bundle (a Parquet bundle keeps its parts). Default: one
        partition per thread of the cluster (at least :data:`MIN_PARTITION_ROWS` rows each), placed
        round-robin on the workers. Every selection runs a few tasks per partition and each task
        costs the scheduler a round trip, so fewer, larger partitions answer faster: measured at
        10M on 2 workers (quiet 2-core machine), a box's masks and its highlight in two views took
        0.5 s in 20 partitions of 500,000 rows and 0.17 s in 2 partitions.
    """

    def __init__(self, path: str | os.PathLike[str], client: Client, *, partition_rows: int | None = None) -> None:
        from distributed import wait

        self.path = Path(path).resolve()
        self.client = client
        manifest = read_manifest(self.path)
        layout = layout_of(manifest)
        n = int(manifest["n_subjects"])
        slots = worker_slots(client)
        if partition_rows is None:
            partition_rows = max(MIN_PARTITION_ROWS, -(-n // max(1, len(slots))))
        self.bounds = layout.get("bounds") or row_bounds(n, max(1, -(-n // partition_rows)))
        self.starts = np.asarray(self.bounds[:-1], dtype=np.int64)
        self.lengths = np.diff(self.bounds).astype(np.int64)
        self.cohort = self._describe(manifest)
        refs: dict[str, tuple[ColumnRef, list[str]]] = {"id": (ColumnRef.of(manifest["ids"]), ["id"])}
        refs |= {name: (ColumnRef.of(meta), [name]) for name, meta in manifest["phenotypes"].items()}
        refs |= {key: (ColumnRef.of(meta), [f"{key}:x", f"{key}:y"]) for key, meta in manifest.get("projections", {}).items()}
        self._manifest = manifest
        # Placed round-robin so every worker holds its share; later tasks follow the data.
        self._homes = [[slots[i % len(slots)]] if slots else None for i in range(len(self.bounds) - 1)]
        self.parts = [
            client.submit(tasks.load_partition, str(self.path), refs, i, self.bounds, pure=False,
                          workers=home, allow_other_workers=True)
            for i, home in enumerate(self._homes)
        ]  # fmt: skip
        wait(self.parts)
        self._blocks: dict[str, list[Future]] = {}
        self._lock = threading.Lock()
        self._cache: dict[Any, Any] = {}
        self.canvases = SteadyCanvases()
        self.everyone = DaskGroup(self, self._map(lambda part: np.ones(len(part), dtype=bool), self.parts), self.lengths)

    def _describe(self, manifest: Mapping[str, Any]) -> Cohort:
        n = int(manifest["n_subjects"])
        specs = {name: PhenotypeSpec.from_json(meta) for name, meta in manifest["phenotypes"].items()}
        column = partial(RemoteColumn, self)
        return Cohort(
            ids=column("id", (n,), manifest["ids"].get("dtype", "int64")),
            phenotypes={name: column(name, (n,), spec.dtype) for name, spec in specs.items()},
            phenotype_specs=specs,
            modalities={name: modality_from_json(meta) for name, meta in manifest.get("modalities", {}).items()},
            latents={k: column(("latent", k), (n, int(m["dim"])), "float32") for k, m in manifest.get("latents", {}).items()},
            projections={k: column(("projection", k), (n, 2), "float32") for k in manifest.get("projections", {})},
            predictions={
                kind: {name: column(("prediction", f"{kind}/{name}"), (n,), "float32") for name in per}
                for kind, per in manifest.get("predictions", {}).items()
            },
            manifest=dict(manifest),
            path=self.path,
        )

    def close(self) -> None:
        """Release everything persisted on the workers (the client stays open: its owner closes it)."""
        for futures in [self.parts, *self._blocks.values()]:
            for future in futures:
                future.release()
        self._cache.clear()

    # -- helpers ----------------------------------------------------------------------------------
    def _map(self, fn: Callable[..., Any], *per_partition: Sequence[Any], **kwargs: Any) -> list[Future]:
        return [self.client.submit(fn, *args, pure=False, **kwargs) for args in zip(*per_partition)]

    def _map_group(self, fn: Callable[..., np.ndarray], *per_partition: Sequence[Any], **kwargs: Any) -> DaskGroup:
        masks = self._map(fn, *per_partition, **kwargs)
        counts = self.client.gather(self._map(np.count_nonzero, masks))
        return DaskGroup(self, masks, counts)

    def _gather(self, fn: Callable[..., Any], *per_partition: Sequence[Any], **kwargs: Any) -> list[Any]:
        return self.client.gather(self._map(fn, *per_partition, **kwargs))

    def group(self, members: Any) -> DaskGroup:
        """``members`` as a :class:`DaskGroup` (rows or a mask given here are sent to the workers as masks)."""
        if isinstance(members, DaskGroup):
            return members
        members = np.asarray(members)
        rows = np.flatnonzero(members) if members.dtype == np.bool_ else members.astype(np.int64)
        return self.from_rows(rows)

    def _cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = compute()
        with self._lock:
            return self._cache.setdefault(key, value)

    def home(self, index: int) -> list[str] | None:
        """The worker partition ``index`` was placed on (a task reading that partition's files runs there too)."""
        return self._homes[index]

    def block(self, kind: str) -> list[Future]:
        """Latent block ``kind``, one ``(rows, d)`` float32 array per partition, persisted on first use."""
        with self._lock:
            found = self._blocks.get(kind)
        if found is None:
            ref = ColumnRef.of(self._manifest["latents"][kind])
            found = [self.client.submit(tasks.load_block, str(self.path), ref, i, self.bounds, pure=False,
                                        workers=self.home(i), allow_other_workers=True)
                     for i in range(len(self.parts))]  # beside partition i's masks  # fmt: skip
            with self._lock:
                found = self._blocks.setdefault(kind, found)
        return found

    def _split_rows(self, rows: np.ndarray) -> list[np.ndarray]:
        cuts = np.searchsorted(rows, self.bounds)
        return [rows[cuts[i] : cuts[i + 1]] - self.starts[i] for i in range(len(self.parts))]

    # -- the map ----------------------------------------------------------------------------------
    def points(self, key: str, color_by: str | None = None) -> Any:
        def compute() -> Any:
            spec = self.cohort.phenotype_specs.get(color_by) if color_by else None
            categories = list(spec.categories) if spec is not None and spec.type != "continuous" else None
            parts = self._map(tasks.xy_frame, self.parts, kx=f"{key}:x", ky=f"{key}:y", color_by=color_by, categories=categories)
            meta = tasks.xy_frame(pd.DataFrame({f"{key}:x": np.empty(0, np.float32), f"{key}:y": np.empty(0, np.float32),
                                           **({color_by: np.empty(0, spec.dtype)} if spec else {})}),
                             f"{key}:x", f"{key}:y", color_by, categories)  # fmt: skip
            return collection(parts, meta)

        return self._cached(("points", key, color_by), compute)

    def extent(self, key: str) -> tuple[tuple[float, float], tuple[float, float]]:
        def compute() -> tuple[tuple[float, float], tuple[float, float]]:
            ranges = np.stack(self._gather(tasks.finite_min_max, self.parts, columns=[f"{key}:x", f"{key}:y"]))
            return padded_extent(np.nanmin(ranges[:, :, 0], axis=0), np.nanmax(ranges[:, :, 1], axis=0))

        return self._cached(("extent", key), compute)

    def highlight(self, key: str, members: Any) -> ClusterPoints:
        group = self.group(members)
        found = group.highlights.get(key)
        if found is None:
            found = group.highlights[key] = ClusterPoints(self, group, key)  # released with the group
        return found

    def nearest(self, key: str, x: float, y: float) -> int:
        found = self._gather(tasks.nearest, self.parts, self.starts, kx=f"{key}:x", ky=f"{key}:y", x=x, y=y)
        return int(min(found)[1])

    # -- selections -------------------------------------------------------------------------------
    def select_box(self, key: str, bounds: tuple[float, float, float, float]) -> DaskGroup:
        return self._map_group(tasks.box, self.parts, kx=f"{key}:x", ky=f"{key}:y", bounds=tuple(float(b) for b in bounds))

    def select_lasso(self, key: str, xs: np.ndarray, ys: np.ndarray) -> DaskGroup:
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        return self._map_group(tasks.lasso, self.parts, kx=f"{key}:x", ky=f"{key}:y", xs=xs, ys=ys)

    def from_rows(self, rows: np.ndarray) -> DaskGroup:
        rows = np.asarray(rows, dtype=np.int64)
        return self._map_group(tasks.mask_of_rows, self.lengths, self._split_rows(rows))

    def combine(self, current: Any, new: Any, mode: str) -> DaskGroup:
        if mode not in ("new", "add", "intersect", "subtract"):
            raise ValueError(f"mode must be one of 'new', 'add', 'intersect', 'subtract'; got {mode!r}.")
        new = self.group(new)
        if mode == "new" or (current is None and mode == "add"):
            return new
        current_masks = self.group(current).masks if current is not None else [None] * len(self.parts)
        return self._map_group(tasks.combine_masks, current_masks, new.masks, mode=mode)

    def restrict(self, region: Any, filters: Mapping[str, Any]) -> DaskGroup:
        if region is not None and not filters:
            selection = self.group(region)  # nothing to filter: no round trip
        else:
            regions = self.group(region).masks if region is not None else [None] * len(self.parts)
            selection = self._map_group(tasks.restrict, self.parts, regions, specs=self.cohort.phenotype_specs,
                                        filters=dict(filters))  # fmt: skip
        for key, canvas, agg in self.canvases.steady():
            self.highlight(key, selection).start(canvas, agg)
        self._start_bin_counts(selection)
        return selection

    def _start_bin_counts(self, group: DaskGroup, bins: int = DEFAULT_BINS) -> None:
        """Start counting a new selection's histograms on the workers, if histograms were ever asked for.

        The filters draw them right after the maps; counting meanwhile overlaps the maps' drawing here.
        """
        with self._lock:
            matrices = self._cache.get(("code_matrices", bins))
        if matrices is not None and ("bins", bins) not in group.cache:
            # After the maps' highlights on each worker (lower priority): they are drawn first.
            counting = [self.client.submit(tasks.count_codes, m, mask, pure=False, priority=-1)
                        for m, mask in zip(matrices, group.masks)]  # fmt: skip
            group.cache.setdefault(("counting", bins), counting)

    def size(self, members: Any) -> int:
        if isinstance(members, DaskGroup):
            return members.size
        members = np.asarray(members)
        return int(np.count_nonzero(members)) if members.dtype == np.bool_ else int(members.size)

    def same(self, a: Any, b: Any) -> bool:
        a, b = self.group(a), self.group(b)
        return a is b or (a.size == b.size and all(self._gather(np.array_equal, a.masks, b.masks)))

    def rows(self, members: Any) -> np.ndarray:
        if not isinstance(members, DaskGroup):
            members = np.asarray(members)
            return np.flatnonzero(members).astype(np.int64) if members.dtype == np.bool_ else members
        everything = [np.arange(c) for c in members.counts]
        return np.concatenate(self._gather(tasks.rows_at, members.masks, everything, self.starts))

    def sample(self, members: Any, k: int, *, seed: int = 0) -> np.ndarray:
        group = self.group(members)
        n = group.size
        if n <= k:
            return self.rows(group)
        # The positions sample_rows picks in the sorted rows, found partition by partition.
        positions = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
        offsets = np.concatenate([[0], np.cumsum(group.counts)])
        cuts = np.searchsorted(positions, offsets)
        local = [positions[cuts[i] : cuts[i + 1]] - offsets[i] for i in range(len(group.masks))]
        wanted = [i for i, p in enumerate(local) if p.size]
        found = self.client.gather([self.client.submit(tasks.rows_at, group.masks[i], local[i], self.starts[i], pure=False)
                                    for i in wanted])  # fmt: skip
        return np.concatenate(found) if found else np.empty(0, dtype=np.int64)

    def select_ids(self, ids: Sequence[Any] | np.ndarray) -> DaskGroup:
        wanted = np.unique(np.asarray(ids))
        group = self._map_group(tasks.isin_ids, self.parts, ids=self.client.scatter(wanted, broadcast=True, hash=False))
        if group.size < wanted.size:
            raise KeyError(
                f"{wanted.size - group.size} of {wanted.size} ids are not in this cohort; check them against the bundle's ids."
            )
        return group

    def subgroup(self, store: SubgroupStore, name: str) -> DaskGroup:
        ids = np.asarray(store.get(name).ids)
        shared = self.client.scatter(ids, broadcast=True, hash=False)
        return self._map_group(tasks.isin_ids, self.parts, ids=shared)

    def ids_at(self, rows: np.ndarray) -> np.ndarray:
        return self.take("id", rows)

    def take(self, column: str | tuple[str, str], rows: np.ndarray) -> np.ndarray:
        """Values of ``column`` (a frame column, or ``("latent", kind)``, ``("projection", key)``,
        ``("prediction", "kind/name")``) at ``rows``, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        pieces = self._split_rows(rows[order])
        wanted = [i for i, p in enumerate(pieces) if p.size]
        if isinstance(column, tuple) and column[0] == "latent":
            blocks = self.block(column[1])
            futures = [self.client.submit(tasks.take_block, blocks[i], pieces[i], pure=False) for i in wanted]
        elif isinstance(column, tuple) and column[0] == "projection":
            futures = [self.client.submit(tasks.take_block_xy, self.parts[i], column[1], pieces[i], pure=False) for i in wanted]
        elif isinstance(column, tuple):
            return read_columns(self.path, ColumnRef.of(tasks.prediction_meta(self._manifest, column[1])))[rows]
        else:
            futures = [self.client.submit(tasks.take_frame, self.parts[i], column, pieces[i], pure=False) for i in wanted]
        found = self.client.gather(futures)
        if not found:
            shape = (0, *self.cohort.latents[column[1]].shape[1:]) if isinstance(column, tuple) and column[0] == "latent" else (0,)
            return np.empty(shape)
        values = np.concatenate(found)
        out = np.empty_like(values)
        out[order] = values
        return out

    # -- statistics -------------------------------------------------------------------------------
    def latent_sums(self) -> DaskLatentSums:
        return DaskLatentSums(self)

    def binning(self, name: str, bins: int = DEFAULT_BINS) -> Binning:
        spec = self.cohort.phenotype_specs[name]
        continuous = spec.type == "continuous"

        def compute() -> Binning:
            if continuous:
                lo, hi = self.finite_range(name, raw=True)
                edges = histogram_edges(np.array([lo, hi]) if np.isfinite(lo) else np.empty(0), bins)
                n_bins = bins
            else:
                edges, n_bins = None, len(spec.categories)
            counts = np.sum(self._gather(tasks.bin_counts, self.parts, name=name, edges=edges, n_bins=n_bins), axis=0)
            return RemoteBinning(edges, () if continuous else tuple(str(c) for c in spec.categories),
                                  np.empty(0, np.int8), counts.astype(np.int64), self, name)  # fmt: skip

        return self._cached(("binning", name, bins if continuous else 0), compute)

    def bin_counts(self, name: str, members: Any, bins: int = DEFAULT_BINS) -> np.ndarray:
        binning = self.binning(name, bins)
        if members is None:
            return binning.cohort_counts
        group = self.group(members)
        found = group.cache.get(("bins", bins))
        if found is None:
            # Every phenotype's histogram in one round trip: the filters and the comparison pane ask
            # for several, and each round trip, not the counting, is what costs on a cluster.
            counting = group.cache.pop(("counting", bins), None) or self._map(tasks.count_codes, self.code_matrices(bins), group.masks)
            parts = self.client.gather(counting)
            found = group.cache[("bins", bins)] = {n: np.sum([p[n] for p in parts], axis=0).astype(np.int64) for n in parts[0]}
        return found[name]

    def code_matrices(self, bins: int = DEFAULT_BINS) -> list[Future]:
        """Every phenotype's bin codes per partition (:class:`~lse_panel.analysis.histograms.CodeMatrix`), binned once on the workers."""

        def compute() -> list[Future]:
            binnings = {n: self.binning(n, bins) for n in self.cohort.phenotype_specs}
            spec = {n: (b.edges, b.n_bins) for n, b in binnings.items()}
            return self._map(tasks.code_matrix, self.parts, bins=spec)

        return self._cached(("code_matrices", bins), compute)

    def phenotype_sums(self) -> PhenotypeSource:
        """Phenotype statistics per partition on the workers, added here (:class:`DaskPhenotypeSums`)."""
        return self._cached("phenotype_source", lambda: DaskPhenotypeSums(self).source())

    def metric_sums(self) -> DaskMetricSums | None:
        """Metric statistics per partition on the workers, added here (:class:`DaskMetricSums`); ``None`` without predictions."""
        if not tasks.prediction_tasks(self._manifest):
            return None
        return self._cached("metric_sums", lambda: DaskMetricSums(self))

    def finite_range(self, name: str, *, raw: bool = False) -> tuple[float, float]:
        ranges = self._cached(("range", name), lambda: np.stack(self._gather(tasks.finite_min_max, self.parts, columns=[name]))[:, 0])
        lo, hi = np.nanmin(ranges[:, 0]), np.nanmax(ranges[:, 1])
        if raw:
            return float(lo), float(hi)
        return (float(lo), float(hi)) if np.isfinite(lo) else (0.0, 1.0)


    # The slice search and rule replay read whole columns (a search fits trees over every subject),
    # so they run as one task on one worker over the memory-mapped bundle; only the slice table and
    # the members' rows come back.
    def apply_rule(self, steps: Sequence[Any]) -> DaskGroup:
        rows = self.client.submit(tasks.rule_rows_on_worker, str(self.path), list(steps), pure=False).result()
        return self.from_rows(rows)

    def find_failures(self, target: str, latent: Any, *, policy: PrivacyPolicy, **options: Any) -> pd.DataFrame:
        return self.client.submit(tasks.failures_on_worker, str(self.path), target, latent, policy, options, pure=False).result()

    def failures(self, target: str, latent: str, *, policy: PrivacyPolicy, **options: Any) -> pd.DataFrame:
        key = ("failures", target, latent, policy.min_group_size, tuple(sorted(options.items())))
        return self._cached(key, lambda: self.find_failures(target, latent, policy=policy, **options))
