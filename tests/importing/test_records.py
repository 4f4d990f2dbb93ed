"""Raw-record readers: files written with each format's own library, real sample records nobody here wrote, and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lse_panel.cohort.records import RecordError, conform, lead_name, read_record, record_format
from lse_panel.cohort.schema import ImageSequenceModality, SignalModality
from import_fixtures import nibabel_file, pydicom_file, wfdb_samples
from lse_panel.importing.example import (
    write_dicom_cine,
    write_dicom_ecg,
    write_dicom_series,
    write_nifti_cine,
    write_wfdb,
)

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _beat(n: int = 500, channels: int = 12) -> np.ndarray:
    t = np.linspace(0, 1, n)
    return np.stack([(1 + 0.1 * c) * np.exp(-((t - 0.4) ** 2) / 0.001) for c in range(channels)]).astype(np.float32)


def _cine(frames: int = 6, size: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([((yy - size / 2) ** 2 + (xx - 3 - f) ** 2 < 16).astype(np.float32) * (0.5 + 0.05 * f)
                     for f in range(frames)])


def test_wfdb_record_round_trip(tmp_path: Path) -> None:
    values = _beat()
    write_wfdb(tmp_path / "rec", values, 500.0, LEADS)
    for name in ("rec", "rec.hea", "rec.dat"):
        record = read_record(tmp_path / name, "signal")
        assert record.sampling_rate_hz == 500.0 and record.channel_names == LEADS and record.units == "mV"
        np.testing.assert_allclose(record.values, values, atol=2e-3)  # 16-bit samples
    assert record_format(tmp_path / "rec") == "wfdb"


def test_dicom_waveform_ecg_in_microvolts_read_in_millivolts(tmp_path: Path) -> None:
    values = _beat(1000)
    write_dicom_ecg(tmp_path / "ecg.dcm", values, 1000.0, LEADS)
    record = read_record(tmp_path / "ecg.dcm", "signal")
    assert record.sampling_rate_hz == 1000.0 and record.channel_names == LEADS and record.units == "mV"
    np.testing.assert_allclose(record.values, values, atol=1e-3)


@pytest.mark.parametrize("writer", ["nifti", "dicom_cine", "dicom_series"])
def test_image_sequences_round_trip_in_orientation_and_timing(tmp_path: Path, writer: str) -> None:
    frames = _cine()
    path = {"nifti": tmp_path / "cine.nii.gz", "dicom_cine": tmp_path / "cine.dcm", "dicom_series": tmp_path / "series"}[writer]
    {"nifti": write_nifti_cine, "dicom_cine": write_dicom_cine, "dicom_series": write_dicom_series}[writer](path, frames, 40.0)
    record = read_record(path, "image_sequence")
    assert record.frame_interval_ms == 40.0
    np.testing.assert_allclose(record.values, frames, atol=1e-3)  # same frame order, rows and columns


def test_npy_records_take_their_timing_from_the_declaration(tmp_path: Path) -> None:
    np.save(tmp_path / "ecg.npy", _beat(100, 3))
    with pytest.raises(RecordError, match="gives no sampling rate; declare `sampling_rate_hz`"):
        read_record(tmp_path / "ecg.npy", "signal")
    modality = SignalModality("ecg", ("I", "II", "V1"), 100, 250.0)
    record = read_record(tmp_path / "ecg.npy", "signal", modality=modality)
    assert record.sampling_rate_hz == 250.0 and record.channel_names == ("I", "II", "V1")
    assert "sampling rate 250 Hz from the modality declaration" in record.notes


def test_conform_resamples_reorders_and_crops(tmp_path: Path) -> None:
    beat = _beat(1000)  # 1 s at 1000 Hz
    write_dicom_ecg(tmp_path / "ecg.dcm", beat, 1000.0, LEADS)
    record = read_record(tmp_path / "ecg.dcm", "signal")
    modality = SignalModality("ecg", ("V1", "I"), n_samples=400, sampling_rate_hz=500.0)
    out = conform(record, modality)
    assert out.shape == (2, 400)
    np.testing.assert_allclose(out[1], beat[0, ::2][:400], atol=0.05)  # lead I, every other sample, first 0.8 s
    np.testing.assert_allclose(out[0], beat[6, ::2][:400], atol=0.05)  # V1
    cine = ImageSequenceModality("mri", 3, 8, 8, frame_interval_ms=80.0)
    write_nifti_cine(tmp_path / "c.nii", _cine(6, 16), 40.0)
    assert conform(read_record(tmp_path / "c.nii", "image_sequence"), cine).shape == (3, 8, 8)
    with pytest.raises(RecordError, match=r"has channels .* needs \['V7'\] \(missing: \['V7'\]\)"):
        conform(record, SignalModality("ecg", ("V7",), 10, 500.0))


def test_lead_names_normalised() -> None:
    assert [lead_name(n) for n in ("Lead I (Einthoven)", "i", "AVR", "Lead aVF", "V5", "MLII")] == ["I", "I", "aVR", "aVF", "V5", "MLII"]


def test_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=r"gone.hea: no such file. Fix its path in the records table"):
        read_record(tmp_path / "gone.hea", "signal")
    (tmp_path / "junk.dat").write_bytes(b"\x00" * 10)
    (tmp_path / "junk.hea").write_text("not a header\n")
    with pytest.raises(RecordError, match=r"junk.hea: cannot be read as wfdb"):
        read_record(tmp_path / "junk.hea", "signal")
    with pytest.raises(RecordError, match=r"cannot tell the format from the file name. Set `format`"):
        (tmp_path / "x.bin").write_bytes(b"1")
        read_record(tmp_path / "x.bin", "signal")
    write_dicom_cine(tmp_path / "cine.dcm", _cine(), 40.0)
    with pytest.raises(RecordError, match=r"cine.dcm: holds a DICOM MR object without waveforms, but the modality is a signal"):
        read_record(tmp_path / "cine.dcm", "signal")
    write_dicom_series(tmp_path / "two", _cine(2), 40.0)
    write_dicom_series(tmp_path / "other", _cine(2), 40.0)
    for file in (tmp_path / "other").iterdir():  # a second series' files in the same folder
        file.rename(tmp_path / "two" / f"other-{file.name}")
    with pytest.raises(RecordError, match=r"two: holds 2 DICOM series; an image sequence is one series"):
        read_record(tmp_path / "two", "image_sequence")


# -- real records nobody here wrote ---------------------------------------------------------------
def test_real_dicom_12_lead_ecg_from_pydicom() -> None:
    record = read_record(pydicom_file("waveform_ecg.dcm"), "signal")
    assert record.values.shape == (12, 10_000) and record.sampling_rate_hz == 1000.0
    assert record.channel_names == LEADS and record.units == "mV"
    assert 0.2 < np.ptp(record.values[1]) < 5  # lead II spans millivolts, not microvolts
    assert record.notes == ("waveform group 0 of 2",)
    median = read_record(pydicom_file("waveform_ecg.dcm"), "signal", options={"waveform": 1})
    assert median.values.shape == (12, 1200)


def test_real_dicom_mr_series_and_single_image_from_pydicom() -> None:
    folder = pydicom_file("MR_small.dcm").parent / "dicomdirtests" / "98892003" / "MR700"
    record = read_record(folder, "image_sequence", modality=ImageSequenceModality("mri", 7, 64, 64, 50.0))
    assert record.values.shape[0] == 7 and record.notes[0] == "frames ordered by instance number"
    assert record.frame_interval_ms == 50.0  # no timing in the files: the declaration's
    single = read_record(pydicom_file("MR_small.dcm"), "image_sequence", modality=ImageSequenceModality("mri", 1, 64, 64, 1.0))
    assert single.values.shape == (1, 64, 64) and single.values.max() > 0


def test_real_nifti_4d_from_nibabel() -> None:
    record = read_record(nibabel_file("example4d.nii.gz"), "image_sequence")
    assert record.values.shape == (2, 96, 128) and record.frame_interval_ms == 2000.0  # TR 2 s
    assert record.notes == ("slice 12 of 24", "time step 2000 labelled seconds, read as ms")
    functional = read_record(nibabel_file("functional.nii"), "image_sequence", options={"slice": 0})
    assert functional.values.shape == (20, 21, 17) and functional.frame_interval_ms == 2000.0


def test_real_wfdb_records_from_physionet() -> None:
    folder = wfdb_samples()
    if folder is None:
        pytest.skip("no WFDB sample records: set LSE_WFDB_SAMPLES to wfdb-python's sample-data folder")
    ptb = read_record(folder / "s0010_re", "signal")  # PTB Diagnostic ECG: 12 leads + Frank leads, 1000 Hz
    assert ptb.values.shape == (15, 38_400) and ptb.sampling_rate_hz == 1000.0
    assert ptb.channel_names[:12] == LEADS and ptb.channel_names[12:] == ("vx", "vy", "vz")
    mitbih = read_record(folder / "100.hea", "signal")  # MIT-BIH arrhythmia record 100: MLII and V5, 360 Hz
    assert mitbih.values.shape == (2, 650_000) and mitbih.sampling_rate_hz == 360.0
    assert mitbih.channel_names == ("MLII", "V5") and mitbih.units == "mV"
    twelve = conform(ptb, SignalModality("ecg", LEADS, n_samples=600, sampling_rate_hz=500.0))
    np.testing.assert_allclose(twelve[0], ptb.values[0, ::2][:600], atol=0.1)
