"""An imported cohort in the explorer (Python level): the subject pane shows raw files beside reconstructions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn

from lse_panel.cohort.bundle import open_bundle
from lse_panel.cohort.records import SignalRecord
from lse_panel.components.state import ExplorerState
from lse_panel.components.subject import SubjectInspector
from lse_panel.model.torchscript import ScriptedDecoder
from lse_panel.sources import open_raw_source


def _inspector(bundle: Path) -> tuple[SubjectInspector, object]:
    cohort = open_bundle(bundle)
    decoder = ScriptedDecoder.from_manifest(cohort.path, cohort.manifest["decoders"])
    return SubjectInspector(ExplorerState(cohort), decoder, raw_source=open_raw_source(cohort)), cohort


def _row(cohort, eid: int) -> int:
    return int(pd.Index(np.asarray(cohort.ids)).get_indexer([eid])[0])


def test_subject_pane_draws_raw_and_decoded_on_one_time_axis(imported: Path) -> None:
    inspector, cohort = _inspector(imported)
    row = _row(cohort, 2_000_004)  # a DICOM waveform at 1000 Hz and a DICOM cine
    records = inspector.records(row)
    assert isinstance(records["ecg"]["original"], SignalRecord)
    assert records["ecg"]["original"].sampling_rate_hz == 1000.0
    assert records["ecg"]["reconstruction"].shape == (12, 600)  # decoded from the fused latent
    inspector.state.inspected = row
    pn.panel(inspector).get_root()
    text = " ".join(o.object for o in inspector._body.select(pn.pane.Markdown))
    assert f"Subject {cohort.ids[row]}" in text
    assert "original: 3,600 samples at 1000 Hz (3,600 ms); reconstruction: 600 samples at 500 Hz (1,200 ms)" in text
    assert "Shown: 0–1,200 ms, each on its own sample times (not resampled)" in text
    assert "original: 16 frames every 40 ms; reconstruction: 16 frames every 40 ms" in text
    inspector.state.decode_from = "ecg"  # the ECG latent decodes only the ECG
    assert set(inspector.records(row)["mri"]) == {"original"}


def test_subjects_without_files_and_files_gone_since_the_import(imported: Path, tmp_path: Path) -> None:
    inspector, cohort = _inspector(imported)
    without = _row(cohort, 2_000_000 + 500)
    assert {name: set(found) for name, found in inspector.records(without).items()} == {
        "ecg": {"reconstruction"}, "mri": {"reconstruction"}}
    inspector.state.inspected = without
    assert "no raw record for this subject" in " ".join(o.object for o in inspector._body.select(pn.pane.Markdown))

    # A raw file deleted after the import: the pane says which and why, the rest still shows.
    copy = tmp_path / "raw"
    root = Path(cohort.manifest["raw"]["modalities"]["ecg"]["root"])
    shutil.copytree(root, copy)
    bundle = tmp_path / "bundle"
    shutil.copytree(imported, bundle)
    import json

    manifest = json.loads((bundle / "manifest.json").read_text())
    for entry in manifest["raw"]["modalities"].values():
        entry["root"] = str(copy)  # the documented fix for moved files: one field
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    inspector, cohort = _inspector(bundle)
    row = _row(cohort, 2_000_001)
    assert "original" in inspector.records(row)["ecg"]
    (copy / "ecg" / "2000001.dat").unlink()
    found = inspector.records(row)
    assert "cannot be read as wfdb" in found["ecg"]["error"] and "original" in found["mri"]
    inspector.state.inspected = row
    alerts = [a.object for a in inspector._body.select(pn.pane.Alert)]
    assert len(alerts) == 1 and "2000001" in alerts[0]
