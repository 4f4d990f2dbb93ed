"""Bundle layouts: one ``.npy`` per column (memory-mapped), or partitioned Parquet that a cluster reads part by part.

The manifest's ``layout`` field says which (absent: ``npy``)::

    "layout": {"format": "parquet", "bounds": [0, 250000, 500000, ...]}

In the Parquet layout every block of columns is a *table*: a directory ``parts/<table>/`` of
``part-00000.parquet``, ``part-00001.parquet``... one file per row range ``bounds[i]:bounds[i + 1]``,
the same ranges in every table, so partition ``i`` of the cohort is file ``i`` of each table:

    parts/base/                     ``id`` and one column per phenotype
    parts/latents__<kind>/          ``z000`` ... one column per latent dimension
    parts/projections__<kind>__<method>/   ``x``, ``y``
    parts/predictions__<kind>/      one column per predicted phenotype

The manifest entry of a column names its table (``"file": "parts/<table>"``) and its columns.
Either layout can be read whole (:func:`read_columns`, for the in-process backend) or partition by
partition (:func:`read_partition`, for Dask); both give the same arrays.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lse_panel.cohort.schema import BundleError

__all__ = [
    "LAYOUTS",
    "ColumnRef",
    "layout_of",
    "part_path",
    "read_columns",
    "read_partition",
    "row_bounds",
    "table_dir",
    "write_table",
]

LAYOUTS = ("npy", "parquet")
PARTS = "parts"


def row_bounds(n: int, partitions: int) -> list[int]:
    """``partitions + 1`` increasing row bounds splitting ``n`` rows into near-equal ranges.

    Parameters
    ----------
    n
        Rows.
    partitions
        Ranges wanted (at least 1; never more than ``n``, except one empty range for no rows).
    """
    if partitions < 1:
        raise ValueError(f"--partitions must be at least 1; got {partitions}.")
    partitions = max(1, min(partitions, n))
    return [int(round(i * n / partitions)) for i in range(partitions + 1)]


def layout_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's layout, ``{"format": "npy"}`` when it names none.

    :func:`lse_panel.cohort.manifest.check_manifest` has validated it (format, row bounds) when
    the manifest was read.
    """
    return dict(manifest.get("layout") or {"format": "npy"})


def table_dir(path: Path, table: str) -> Path:
    """Directory of table ``table`` of the Parquet layout."""
    return Path(path) / PARTS / table


def part_path(path: Path, table: str, index: int) -> Path:
    """File of partition ``index`` of table ``table``."""
    return table_dir(path, table) / f"part-{index:05d}.parquet"


class ColumnRef:
    """Where one logical column lives: its manifest entry's file (``.npy`` or ``parts/<table>``) and columns.

    Parameters
    ----------
    file
        The manifest entry's ``file``.
    columns
        Parquet columns stacked into the array (one for a 1-D column, ``d`` for a block); ignored
        for ``.npy``.
    """

    __slots__ = ("columns", "file")

    def __init__(self, file: str, columns: Sequence[str] = ()) -> None:
        self.file = file
        self.columns = list(columns)

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> ColumnRef:
        """The reference a manifest entry describes."""
        return cls(meta["file"], meta.get("columns", ()))

    @property
    def table(self) -> str | None:
        return self.file[len(PARTS) + 1 :] if self.file.startswith(f"{PARTS}/") else None

    def __repr__(self) -> str:
        return f"ColumnRef({self.file!r}, {self.columns!r})"


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.column_stack(arrays)


def _read_parquet(file: Path, columns: Sequence[str]) -> np.ndarray:
    import pyarrow.parquet as pq

    if not file.exists():
        raise BundleError(f"{file}: missing, though the manifest names its table. Rebuild that step (`lse build`).")
    try:
        table = pq.read_table(file, columns=list(columns))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise BundleError(f"{file}: unreadable as Parquet ({exc}). Rebuild that step (`lse build`).") from None
    arrays = [table.column(c).to_numpy() for c in columns]
    if arrays and arrays[0].dtype == object:  # string ids
        arrays = [np.asarray(a.astype(str)) for a in arrays]
    return _stack(arrays)


def read_columns(path: Path, ref: ColumnRef, *, mmap: bool = True) -> np.ndarray:
    """The whole column (or block) ``ref`` of the bundle at ``path``: memory-mapped ``.npy``, or every part read.

    Raises
    ------
    BundleError
        A missing or unreadable file, named.
    """
    if ref.table is None:
        file = Path(path) / ref.file
        if not file.exists():
            raise BundleError(f"{file}: missing, though the manifest names it. Rebuild that step (`lse build`).")
        try:
            return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise BundleError(f"{file}: unreadable as .npy ({exc}). Rebuild that step (`lse build`).") from None
    files = sorted(table_dir(path, ref.table).glob("part-*.parquet"))
    if not files:
        raise BundleError(f"{table_dir(path, ref.table)}: no parts, though the manifest names the table. Rebuild that step.")
    return np.concatenate([_read_parquet(f, ref.columns) for f in files])


def read_partition(path: Path, ref: ColumnRef, index: int, bounds: Sequence[int]) -> np.ndarray:
    """Rows ``bounds[index]:bounds[index + 1]`` of column ``ref``: one Parquet part, or a slice of the ``.npy``.

    A copy in memory (a worker persists it), not a view of a memory map.
    """
    if ref.table is None:
        block = read_columns(path, ref, mmap=True)
        return np.array(block[bounds[index] : bounds[index + 1]])
    return _read_parquet(part_path(path, ref.table, index), ref.columns)


def write_table(path: Path, table: str, columns: Mapping[str, np.ndarray], bounds: Sequence[int]) -> None:
    """Write (or add columns to) table ``table``, one Parquet file per row range, each atomically.

    Columns already in the table and not in ``columns`` are kept: a table grows as steps add
    predictions one phenotype at a time.
    """
    import pyarrow.parquet as pq

    for name, values in columns.items():
        if len(values) != bounds[-1]:
            raise BundleError(f"parts/{table}: column {name!r} has {len(values)} rows for a bundle of {bounds[-1]}.")
    directory = table_dir(path, table)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(len(bounds) - 1):
        file = part_path(path, table, i)
        data = {name: np.asarray(values[bounds[i] : bounds[i + 1]]) for name, values in columns.items()}
        if file.exists():
            kept = pq.read_table(file)
            data = {c: kept.column(c).to_numpy() for c in kept.column_names if c not in data} | data
        write_part(file, data)


def write_part(file: Path, data: Mapping[str, np.ndarray]) -> None:
    """One Parquet part from ``{column: 1-D array}``, written under a temporary name and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(pa.table({name: np.ascontiguousarray(v) for name, v in data.items()}), tmp, compression="none")
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


def remove_table(path: Path, table: str) -> None:
    """Delete table ``table`` (a step being recomputed)."""
    shutil.rmtree(table_dir(path, table), ignore_errors=True)


def latent_columns(dim: int) -> list[str]:
    """Parquet column names of a ``dim``-wide latent block."""
    return [f"z{j:03d}" for j in range(dim)]
