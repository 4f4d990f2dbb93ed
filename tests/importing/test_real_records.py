"""Importing raw records nobody here wrote: pydicom's and nibabel's test data, PhysioNet's WFDB sample records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import pytest

from lse_panel.cohort.bundle import open_bundle
from lse_panel.components.state import ExplorerState
from lse_panel.components.subject import SubjectInspector
from lse_panel.importing import import_cohort, read_spec
from lse_panel.sources import open_raw_source

from import_fixtures import nibabel_file, pydicom_file, wfdb_samples

N = 40


def real_cohort(folder: Path) -> Path:
    """A small cohort whose raw records are real files: ECGs (DICOM, WFDB) and MR (NIfTI, DICOM); returns the spec."""
    rng = np.random.default_rng(0)
    ids = np.arange(1, N + 1)
    table = pd.DataFrame(rng.normal(size=(N, 6)).astype(np.float32), columns=[f"z{i}" for i in range(6)])
    table.insert(0, "id", ids)
    table.to_parquet(folder / "embeddings.parquet", index=False)
    pd.DataFrame({"id": ids, "age": rng.normal(60, 8, N).round(1)}).to_csv(folder / "phenotypes.csv", index=False)
    ecg = [(1, pydicom_file("waveform_ecg.dcm"))]
    samples = wfdb_samples()
    if samples is not None:
        ecg += [(2, samples / "s0010_re"), (3, samples / "100.hea")]
    mri = [(1, nibabel_file("example4d.nii.gz")), (2, nibabel_file("functional.nii")),
           (3, pydicom_file("MR_small.dcm").parent / "dicomdirtests" / "98892003" / "MR700"), (4, pydicom_file("MR_small.dcm"))]
    pd.DataFrame(ecg, columns=["id", "path"]).to_csv(folder / "ecg_files.csv", index=False)
    pd.DataFrame(mri, columns=["id", "path"]).to_csv(folder / "mri_files.csv", index=False)
    spec = folder / "cohort.toml"
    spec.write_text("""
[cohort]
id_column = "id"
[latents.fused]
file = "embeddings.parquet"
[phenotypes]
file = "phenotypes.csv"
[modalities.ecg]
kind = "signal"
[modalities.mri]
kind = "image_sequence"
frame_interval_ms = 50        # for files that carry no timing (a DICOM series without trigger times)
[raw.ecg]
records = "ecg_files.csv"
check = "all"
[raw.mri]
records = "mri_files.csv"
check = "all"
[build]
projections = ["pca"]
""")
    return spec


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("real")
    out = folder / "bundle"
    import_cohort(read_spec(real_cohort(folder)), out, progress=False, log=lambda _: None)
    return out


def _shown(inspector: SubjectInspector, row: int) -> str:
    inspector.state.inspected = row
    pn.panel(inspector).get_root()
    return " ".join(o.object for o in inspector._body.select(pn.pane.Markdown))


def test_real_records_import_and_show(real: Path) -> None:
    cohort = open_bundle(real)
    modalities = cohort.modalities
    # Declared by kind only: the rest came from the first record (pydicom's 12-lead ECG, nibabel's example4d).
    assert modalities["ecg"].channel_names == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    assert modalities["ecg"].sampling_rate_hz == 1000.0 and modalities["ecg"].n_samples == 10_000
    assert modalities["mri"].shape == (2, 96, 128) and modalities["mri"].frame_interval_ms == 50.0  # as declared
    inspector = SubjectInspector(ExplorerState(cohort), raw_source=open_raw_source(cohort))  # no decoder: originals only
    rows = {int(i): int(r) for r, i in enumerate(cohort.ids)}
    text = _shown(inspector, rows[1])
    assert "original: 10,000 samples at 1000 Hz (10,000 ms)" in text and "Original: waveform group 0 of 2" in text
    assert "original: 2 frames every 2000 ms" in text and "time step 2000 labelled seconds, read as ms" in text
    assert "frames ordered by instance number" in _shown(inspector, rows[3])  # pydicom's MR series, no timing
    assert "frame interval 50 ms from the modality declaration" in _shown(inspector, rows[3])
    assert inspector.records(rows[4])["mri"]["original"].values.shape == (1, 64, 64)
    if wfdb_samples() is None:
        pytest.skip("no PhysioNet WFDB samples here; DICOM and NIfTI checked")
    ptb = _shown(inspector, rows[2])
    assert "original: 38,400 samples at 1000 Hz (38,400 ms)" in ptb and "Shown: 0–10,000 ms" in ptb
    holter = _shown(inspector, rows[3])
    assert "original: 650,000 samples at 360 Hz (1,805,556 ms)" in holter and "one sample in 1" not in holter
