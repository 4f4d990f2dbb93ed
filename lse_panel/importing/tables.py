"""Readers for the tables a researcher brings: embeddings (Parquet, CSV, ``.npy`` + ids, AnnData) and id → value tables.

Each embedding reader gives its ids first (one column, cheap) and then its values in batches of
rows, so a 500,000 × 256 embedding is never held whole: the importer writes each batch straight
into the bundle's memory-mapped block. Every problem is a :class:`TableError` naming the file,
the row (counted from 1, header excluded) or column, and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lse_panel.cohort.schema import BundleError
from lse_panel.importing.spec import LatentInput

BATCH_ROWS = 65_536
"""Rows read at a time: 64 MB of float32 at 256 values a row."""


class TableError(BundleError):
    """An input table is not what the spec says; the message names the file, the row or column and the fix."""


def _arrow_numeric(type_: Any) -> bool:
    import pyarrow.types as pt

    return pt.is_integer(type_) or pt.is_floating(type_) or pt.is_decimal(type_)


def _unknown_column(file: Path, column: str, key: str, columns: list[str]) -> TableError:
    shown = ", ".join(columns[:12]) + (f", … ({len(columns)} in all)" if len(columns) > 12 else "")
    return TableError(f"{file}: no column {column!r} ({key}). Its columns are: {shown}. Fix {key} in the spec.")


def read_table(file: Path, fmt: str, columns: list[str] | None = None) -> Any:
    """A whole CSV or Parquet table (only ``columns`` when given) as a ``pyarrow.Table``."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            return pq.read_table(file, columns=columns)
        options = pacsv.ConvertOptions(include_columns=columns) if columns else None
        parse = pacsv.ParseOptions(delimiter="\t") if file.suffix.lower() == ".tsv" else None
        return pacsv.read_csv(file, convert_options=options, parse_options=parse)
    except FileNotFoundError:
        raise TableError(f"{file}: no such file. Fix its path in the spec.") from None
    except Exception as exc:  # noqa: BLE001 - arrow's errors name the line; keep that and add the file
        raise TableError(f"{file}: cannot be read as {fmt} ({exc}). Check that the file is complete {fmt}.") from None


def table_columns(file: Path, fmt: str) -> list[str]:
    """Column names of a CSV (its header) or Parquet file (its schema), without reading the data."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not file.is_file():
        raise TableError(f"{file}: no such file. Fix its path in the spec.")
    try:
        if fmt == "parquet":
            return list(pq.ParquetFile(file).schema_arrow.names)
        parse = pacsv.ParseOptions(delimiter="\t") if file.suffix.lower() == ".tsv" else None
        return list(pacsv.open_csv(file, parse_options=parse).schema.names)
    except Exception as exc:  # noqa: BLE001
        raise TableError(f"{file}: cannot be read as {fmt} ({exc}). Check that the file is complete {fmt}.") from None


class EmbeddingReader:
    """One latent input: its ids, its dimension, then its values in row batches.

    Parameters
    ----------
    source
        The spec's entry for this latent kind.
    id_column
        The cohort-wide id column, used when the entry names none.
    """

    def __init__(self, source: LatentInput, id_column: str | None) -> None:
        self.source = source
        self.file = source.file
        self.id_column = source.id_column or id_column
        self.where = f"latents.{source.kind}"
        if source.format in ("parquet", "csv"):
            self._plan_table()
        elif source.format == "npy":
            self._plan_npy()
        else:
            self._plan_h5ad()

    # -- Parquet and CSV ---------------------------------------------------------------------
    def _plan_table(self) -> None:
        columns = table_columns(self.file, self.source.format)
        if not self.id_column:
            raise TableError(f"{self.file}: which column holds the subject ids? Set [cohort] id_column (or --id-column).")
        if self.id_column not in columns:
            raise _unknown_column(self.file, self.id_column, "the id column", columns)
        if self.source.column:
            if self.source.column not in columns:
                raise _unknown_column(self.file, self.source.column, f"{self.where}.column", columns)
            self.value_columns = [self.source.column]
            self.list_column = True
        else:
            self.list_column = False
            if self.source.columns:
                for name in self.source.columns:
                    if name not in columns:
                        raise _unknown_column(self.file, name, f"{self.where}.columns", columns)
                self.value_columns = list(self.source.columns)
            elif self.source.prefix:
                self.value_columns = [c for c in columns if c.startswith(self.source.prefix) and c != self.id_column]
                if not self.value_columns:
                    raise TableError(f"{self.file}: no column starts with {self.source.prefix!r} ({self.where}.prefix).")
            else:
                self.value_columns = [c for c in columns if c != self.id_column]
        self._check_types()

    def _check_types(self) -> None:
        import pyarrow.types as pt

        if self.source.format == "parquet":
            import pyarrow.parquet as pq

            schema = pq.ParquetFile(self.file).schema_arrow
        else:
            schema = read_table(self.file, "csv", self.value_columns[:50]).schema  # a CSV's types need a read
        for name in self.value_columns:
            if name not in schema.names:
                continue
            type_ = schema.field(name).type
            if self.list_column:
                if not (pt.is_list(type_) or pt.is_large_list(type_) or pt.is_fixed_size_list(type_)):
                    raise TableError(f"{self.file}: column {name!r} ({self.where}.column) holds {type_}, not lists of numbers.")
            elif not _arrow_numeric(type_) and not pt.is_null(type_):
                raise TableError(
                    f"{self.file}: column {name!r} holds {type_}, not numbers; an embedding table is an id column plus "
                    f"numeric columns. Name the embedding's columns with {self.where}.columns or .prefix, or fix the file."
                )
        self.dim = len(self.value_columns) if not self.list_column else self._list_dim()

    def _list_dim(self) -> int:
        first = next(self._table_batches(1), None)
        if first is None:
            raise TableError(f"{self.file}: has no rows.")
        return int(first.shape[1])

    def ids(self) -> Any:
        """The id column as a ``pyarrow.Array`` or numpy array, in file order."""
        if self.source.format in ("parquet", "csv"):
            return read_table(self.file, self.source.format, [self.id_column]).column(self.id_column).combine_chunks()
        if self.source.format == "npy":
            return self._npy_ids()
        return self._h5ad_ids()

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, float32 values (k, dim))`` for consecutive row batches."""
        if self.source.format in ("parquet", "csv"):
            start = 0
            for block in self._table_batches(rows):
                yield start, block
                start += len(block)
        elif self.source.format == "npy":
            for start in range(0, len(self._array), rows):
                yield start, np.asarray(self._array[start : start + rows], dtype=np.float32)
        else:
            yield from self._h5ad_batches(rows)

    def _table_batches(self, rows: int) -> Iterator[np.ndarray]:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        if self.source.format == "parquet":
            stream = pq.ParquetFile(self.file).iter_batches(batch_size=rows, columns=self.value_columns)
        else:
            types = {} if self.list_column else {c: pa.float32() for c in self.value_columns}
            convert = pacsv.ConvertOptions(include_columns=self.value_columns, column_types=types)
            parse = pacsv.ParseOptions(delimiter="\t") if self.file.suffix.lower() == ".tsv" else None
            try:
                stream = pacsv.open_csv(self.file, convert_options=convert, parse_options=parse,
                                        read_options=pacsv.ReadOptions(block_size=16 << 20))
            except pa.ArrowInvalid as exc:
                raise TableError(f"{self.file}: {exc}. The embedding columns must hold numbers only.") from None
        start = 0
        batches = iter(stream)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise TableError(f"{self.file}: {exc}. The embedding columns must hold numbers only.") from None
            block = self._list_values(batch, start) if self.list_column else self._numeric_values(batch)
            start += len(block)
            yield block

    def _numeric_values(self, batch: Any) -> np.ndarray:
        out = np.empty((batch.num_rows, len(self.value_columns)), dtype=np.float32)
        for j, column in enumerate(batch.columns):
            # Nulls become NaN here and are reported with the row by the importer's finiteness check.
            out[:, j] = column.to_numpy(zero_copy_only=False)
        return out

    def _list_values(self, batch: Any, start: int) -> np.ndarray:
        import pyarrow.compute as pc

        column = batch.column(0)
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        dim = getattr(self, "dim", None) or (int(lengths[0]) if len(lengths) else 0)
        bad = np.flatnonzero(lengths != dim)
        if bad.size:
            row = int(bad[0])
            raise TableError(
                f"{self.file}: row {start + row + 1} of column {self.source.column!r} holds {int(lengths[row]) if lengths[row] == lengths[row] else 'no'} "
                f"values, but earlier rows hold {dim} (mixed dimensions). Every embedding must have the same length."
            )
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(lengths), dim)

    # -- .npy + an id file -------------------------------------------------------------------
    def _plan_npy(self) -> None:
        if not self.file.is_file():
            raise TableError(f"{self.file}: no such file. Fix {self.where}.file in the spec.")
        try:
            self._array = np.load(self.file, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise TableError(f"{self.file}: not a plain .npy array ({exc}). Save it with np.save (no object arrays).") from None
        if self._array.ndim != 2:
            raise TableError(f"{self.file}: array of shape {self._array.shape}; an embedding is (subjects, dimensions).")
        if self._array.dtype.kind not in "fiu":
            raise TableError(f"{self.file}: dtype {self._array.dtype}; an embedding holds numbers.")
        self.dim = int(self._array.shape[1])

    def _npy_ids(self) -> Any:
        ids_file = self.source.ids
        assert ids_file is not None
        if not ids_file.is_file():
            raise TableError(f"{ids_file}: no such file ({self.where}.ids). Give the file of ids, one per embedding row.")
        if ids_file.suffix.lower() == ".npy":
            ids = np.load(ids_file, allow_pickle=False)
        elif ids_file.suffix.lower() in (".csv", ".parquet", ".tsv"):
            fmt = "parquet" if ids_file.suffix.lower() == ".parquet" else "csv"
            columns = table_columns(ids_file, fmt)
            column = self.id_column if self.id_column in columns else (columns[0] if len(columns) == 1 else None)
            if column is None:
                raise _unknown_column(ids_file, str(self.id_column), "the id column", columns)
            ids = read_table(ids_file, fmt, [column]).column(column).combine_chunks()
        else:
            import pyarrow as pa

            lines = [line.strip() for line in ids_file.read_text().splitlines()]
            while lines and not lines[-1]:
                lines.pop()
            ids = pa.array(lines)
        if len(ids) != len(self._array):
            raise TableError(
                f"{ids_file}: {len(ids):,} ids for {len(self._array):,} rows in {self.file.name}. "
                "The id file must list one id per embedding row, in the same order."
            )
        return ids

    # -- AnnData ---------------------------------------------------------------------------------
    def _plan_h5ad(self) -> None:
        import h5py

        if not self.file.is_file():
            raise TableError(f"{self.file}: no such file. Fix {self.where}.file in the spec.")
        try:
            with h5py.File(self.file, "r") as f:
                keys = list(f["obsm"].keys()) if "obsm" in f else []
                if self.source.obsm not in keys:
                    raise TableError(
                        f"{self.file}: no obsm[{self.source.obsm!r}] ({self.where}.obsm); this file's obsm holds: "
                        f"{', '.join(keys) or 'nothing'}."
                    )
                node = f["obsm"][self.source.obsm]
                self._dense = isinstance(node, h5py.Dataset)
                if self._dense:
                    if node.ndim != 2:
                        raise TableError(f"{self.file}: obsm[{self.source.obsm!r}] has shape {node.shape}; expected (cells, dimensions).")
                    self.dim = int(node.shape[1])
                    self._n = int(node.shape[0])
        except OSError as exc:
            raise TableError(f"{self.file}: not an HDF5/AnnData file ({exc}). Write it with AnnData.write_h5ad.") from None
        if not self._dense:
            block = self._read_whole()
            self.dim, self._n = int(block.shape[1]), int(block.shape[0])

    def _read_whole(self) -> np.ndarray:
        import anndata

        adata = anndata.read_h5ad(self.file, backed="r")
        value = adata.obsm[self.source.obsm]
        value = value.to_numpy() if hasattr(value, "to_numpy") else value
        value = value.toarray() if hasattr(value, "toarray") else value
        return np.asarray(value, dtype=np.float32)

    def _h5ad_ids(self) -> Any:
        import anndata
        import h5py

        with h5py.File(self.file, "r") as f:
            obs = f["obs"]
            index = obs.attrs.get("_index", "_index")
            names = anndata.io.read_elem(obs[index])
        return np.asarray(names).astype(str)

    def _h5ad_batches(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        if not self._dense:  # sparse or a DataFrame: anndata reads it whole (small embeddings only)
            block = self._read_whole()
            for start in range(0, len(block), rows):
                yield start, block[start : start + rows]
            return
        import h5py

        with h5py.File(self.file, "r") as f:
            node = f["obsm"][self.source.obsm]
            for start in range(0, self._n, rows):
                yield start, np.asarray(node[start : start + rows], dtype=np.float32)
