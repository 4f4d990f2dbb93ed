"""Where a bundle's raw records come from: one small dispatch on the manifest's ``raw.source``.

The cohort layer only describes the bundle; which code can regenerate or read its raw records
(the synthetic generator, readers of the user's files) lives above it, here, so ``cohort`` never
imports ``synth``. Views receive the source object (or ``None``) from whoever builds them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Protocol

import numpy as np

if TYPE_CHECKING:
    from lse_panel.cohort.bundle import Cohort

__all__ = ["RawSource", "open_raw_source"]


class RawSource(Protocol):
    """Regenerates or reads subjects' raw records.

    A source of real files also has ``records(row)``: bundle row → ``{modality: record}``, each a
    :class:`~lse_panel.cohort.records.SignalRecord` or
    :class:`~lse_panel.cohort.records.ImageSequenceRecord` with its own length and timing
    (``None`` when the subject has no file of that modality, a ``RecordError`` when it cannot be
    read); the subject pane prefers it to ``raw``.
    """

    def raw(self, ids: np.ndarray) -> Mapping[str, np.ndarray]:
        """Subject ids → ``{modality: (len(ids), *shape)}``, each modality as the manifest declares it."""
        ...


def open_raw_source(cohort: Cohort) -> RawSource | None:
    """The raw source the bundle's manifest names (``manifest["raw"]["source"]``), or ``None``.

    Parameters
    ----------
    cohort
        Any cohort; one without a ``raw`` entry has no raw records to show.

    Returns
    -------
    RawSource or None
        ``"synthetic"``: a :class:`~lse_panel.synth.SyntheticCohort` that regenerates each
        subject's records from (seed, id); ``"files"``: a
        :class:`~lse_panel.cohort.raw_files.FileRecordSource` reading the user's own files
        (WFDB, DICOM, NIfTI, ``.npy``) that ``lse import`` listed.

    Raises
    ------
    ValueError
        For a source this version does not know, naming the manifest field.
    """
    raw = cohort.manifest.get("raw") or {}
    source = raw.get("source")
    if source is None:
        return None
    if source == "synthetic":
        from lse_panel.synth import SyntheticCohort

        return SyntheticCohort.from_json(raw)
    if source == "files" and cohort.path is not None:
        from lse_panel.cohort.raw_files import FileRecordSource

        return FileRecordSource(cohort.path, raw, cohort.modalities, cohort.ids)
    where = f"{cohort.path / 'manifest.json'}" if cohort.path is not None else "manifest"
    raise ValueError(
        f"{where}: raw.source is {source!r}; this lse-panel reads 'synthetic' and 'files' raw sources. "
        "Upgrade lse-panel or remove the field to explore the bundle without raw records."
    )
