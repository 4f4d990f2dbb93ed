"""A bundle's raw records kept as the user's own files: the records tables and the source that reads them.

``lse import`` writes, per modality, ``raw/<modality>.parquet`` (bundle row → file path, for the
subjects that have a record) and describes it in ``manifest["raw"]``::

    {"source": "files",
     "modalities": {"ecg": {"format": "wfdb", "table": "raw/ecg.parquet", "root": "/data/ecg",
                            "n_records": 49873, "options": {}}}}

Paths are stored relative to ``root`` when they lie under it, so a cohort whose files moved is
fixed by editing one field. The files themselves are never copied or changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lse_panel.cohort.records import Record, RecordError, conform, read_record
from lse_panel.cohort.schema import BundleError, Modality

FILES_SOURCE = "files"


def write_records_table(directory: Path, modality: str, rows: np.ndarray, paths: list[str], root: Path) -> dict[str, Any]:
    """Write ``raw/<modality>.parquet`` (rows sorted) and return its manifest entry (without ``format``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = np.argsort(rows, kind="stable")
    root = root.resolve()
    stored = []
    for i in order:
        path = Path(paths[i])
        try:
            stored.append(str(path.relative_to(root)))
        except ValueError:
            stored.append(str(path))
    relative = f"raw/{modality}.parquet"
    (directory / "raw").mkdir(parents=True, exist_ok=True)
    table = pa.table({"row": pa.array(np.asarray(rows, dtype=np.int64)[order]), "path": pa.array(stored, pa.string())})
    pq.write_table(table, directory / relative)
    return {"table": relative, "root": str(root), "n_records": int(len(stored))}


class FileRecordSource:
    """Reads each subject's raw records from the files a bundle's records tables name.

    Parameters
    ----------
    bundle
        The bundle directory (records tables are relative to it).
    raw
        ``manifest["raw"]`` with ``source == "files"``.
    modalities
        The bundle's declared modalities.
    ids
        The bundle's subject ids, in row order (to look ids up).
    """

    def __init__(self, bundle: Path, raw: Mapping[str, Any], modalities: Mapping[str, Modality], ids: np.ndarray) -> None:
        if raw.get("source") != FILES_SOURCE:
            raise BundleError(f"{bundle}: raw source {raw.get('source')!r} is not {FILES_SOURCE!r}.")
        self.bundle = Path(bundle)
        self.entries = dict(raw.get("modalities", {}))
        unknown = [name for name in self.entries if name not in modalities]
        if unknown:
            raise BundleError(
                f"{bundle / 'manifest.json'}: raw records for {unknown}, which 'modalities' does not declare. "
                "Declare them, or remove their records."
            )
        self.modalities = {name: modalities[name] for name in self.entries}
        self.ids = ids
        self._tables: dict[str, tuple[np.ndarray, Any]] = {}

    def _table(self, modality: str) -> tuple[np.ndarray, Any]:
        if modality not in self._tables:
            import pyarrow.parquet as pq

            entry = self.entries[modality]
            file = self.bundle / entry["table"]
            if not file.exists():
                raise BundleError(f"{file}: missing, though manifest field 'raw.modalities.{modality}' names it. Re-run `lse import`.")
            table = pq.read_table(file)
            # Rows as numpy for a binary search; paths stay one Arrow string array (compact at 500k).
            self._tables[modality] = (table.column("row").to_numpy(), table.column("path").combine_chunks())
        return self._tables[modality]

    def path(self, modality: str, row: int) -> Path | None:
        """The file of ``modality`` for bundle row ``row``, or ``None`` when that subject has none."""
        rows, paths = self._table(modality)
        at = int(np.searchsorted(rows, row))
        if at >= len(rows) or rows[at] != row:
            return None
        path = Path(paths[at].as_py())
        return path if path.is_absolute() else Path(self.entries[modality]["root"]) / path

    def record(self, modality: str, row: int) -> Record | None:
        """Subject ``row``'s record of ``modality`` with its own timing, or ``None`` when there is none.

        Raises
        ------
        RecordError
            Naming the file, when it is gone or unreadable.
        """
        path = self.path(modality, row)
        if path is None:
            return None
        entry = self.entries[modality]
        modality_spec = self.modalities[modality]
        return read_record(path, modality_spec.kind, format=entry.get("format"), modality=modality_spec,
                           options=entry.get("options"))

    def records(self, row: int) -> dict[str, Record | RecordError | None]:
        """Every modality's record of subject ``row`` (a :class:`RecordError` in place of one that fails)."""
        out: dict[str, Record | RecordError | None] = {}
        for name in self.entries:
            try:
                out[name] = self.record(name, row)
            except RecordError as exc:
                out[name] = exc
        return out

    def raw(self, ids: np.ndarray, phenotypes: Any = None) -> dict[str, np.ndarray]:
        """Records of ``ids`` conformed to each declared modality's shape (NaN where a subject has none).

        The same interface as the synthetic generator's ``raw``; records of other lengths and
        rates are resampled (:func:`~lse_panel.cohort.records.conform`).
        """
        import pandas as pd

        positions = pd.Index(np.asarray(self.ids)).get_indexer(np.asarray(ids))
        if (positions < 0).any():
            raise KeyError(f"ids not in this cohort: {np.asarray(ids)[positions < 0][:5].tolist()}")
        out = {}
        for name, modality in self.modalities.items():
            block = np.full((len(positions), *modality.shape), np.nan, dtype=np.float32)
            for i, row in enumerate(positions):
                record = self.record(name, int(row))
                if record is not None:
                    block[i] = conform(record, modality)
            out[name] = block
        return out

    def to_json(self) -> dict[str, Any]:
        """The manifest entry this source was built from."""
        return {"source": FILES_SOURCE, "modalities": self.entries}
