"""An example cohort laid out the way a researcher's files are: embeddings, phenotypes, raw records, TorchScript models.

``lse example-cohort --out DIR`` writes it, with a commented ``cohort.toml`` that ``lse import``
reads: the quickest way to see the import end to end before pointing a spec at your own files.
The subjects come from the synthetic generator; the "model" is a linear autoencoder (PCA) per
modality, exported as TorchScript, so its decoders truly reconstruct the raw records. Raw files
are written with each format's own library (``wfdb.wrsamp``, ``pydicom``'s ``save_as``,
``nibabel.save``); rows of some tables are shuffled so the import has to join on the id.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lse_panel.synth import SyntheticCohort

ID_OFFSET = 2_000_000
MRI_SHAPE = (16, 32, 32)
ECG_LEADS_DICOM_ORDER = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

SPEC = '''# lse import --spec {name} --out data/example
# Paths are relative to the folder of this file.

[cohort]
name = "Example cohort (synthetic subjects, user-style files)"
id_column = "eid"              # the subject id column in every table (override per input with id_column)
# allow_partial = true         # keep only the subjects every input has, instead of refusing a mismatch

# One table per latent kind; any names, any dimension.
[latents.ecg]
file = "embeddings/ecg.parquet"   # an id column plus one numeric column per dimension
[latents.mri]
file = "embeddings/mri.csv"
prefix = "m_"                     # take the columns starting with m_ (default: every column but the id)
[latents.fused]
file = "embeddings/fused.npy"     # (subjects, dimensions) ...
ids = "embeddings/fused_ids.txt"  # ... with its ids, one per row
# or from AnnData: file = "embeddings/all.h5ad", obsm = "X_fused"  (ids are the obs_names)

[phenotypes]
file = "phenotypes.csv"
# targets = ["age", "lvef", "af"]       # what the accuracy pane predicts (default: every suitable column)
exclude = ["note"]                      # free text: not a phenotype
[phenotypes.columns.age]
units = "years"
description = "Age at the imaging visit"
[phenotypes.columns.lvef]
units = "%"
[phenotypes.columns.af]
type = "binary"
categories = ["no", "yes"]              # labels for 0 and 1
description = "Atrial fibrillation"

# What each modality is: decoders produce exactly this shape.
[modalities.ecg]
kind = "signal"
channel_names = {leads}
n_samples = 600
sampling_rate_hz = 500
units = "mV"
[modalities.mri]
kind = "image_sequence"
shape = {mri_shape}                  # frames, height, width
frame_interval_ms = 40

# TorchScript decoders, one per latent kind and modality (torch.jit.script(model).save(path)).
[[decoders]]
latent = "fused"
modality = "ecg"
file = "models/fused_to_ecg.pt"
[[decoders]]
latent = "fused"
modality = "mri"
file = "models/fused_to_mri.pt"
[[decoders]]
latent = "ecg"
modality = "ecg"
file = "models/ecg_decoder.pt"
[[decoders]]
latent = "mri"
modality = "mri"
file = "models/mri_decoder.pt"

# Raw records: a table of id -> file per modality (WFDB, DICOM, NIfTI or .npy; the format is
# taken from each file's name unless `format` says otherwise). Not every subject needs one.
[raw.ecg]
records = "raw/ecg_records.csv"
[raw.mri]
records = "raw/mri_records.parquet"

# No embeddings yet? Let an encoder compute them from the raw records instead of [latents.ecg]:
# [encoders.ecg]
# file = "models/ecg_encoder.pt"
# modality = "ecg"
'''


def write_example_cohort(folder: str | Path, *, n_subjects: int = 2_000, n_records: int = 40, latent_dim: int = 16,
                         seed: int = 0) -> Path:
    """Write the example cohort into ``folder``; returns the path of its ``cohort.toml``.

    Parameters
    ----------
    folder
        Where to write (created; existing files of the same names are replaced).
    n_subjects
        Subjects with embeddings and phenotypes.
    n_records
        Subjects with raw ECG and MRI files (the first ones).
    latent_dim
        Values per latent kind.
    seed
        The synthetic generator's seed.
    """
    from lse_panel.model.torchscript import save_linear_torchscript

    folder = Path(folder)
    for sub in ("embeddings", "models", "raw/ecg", "raw/mri"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    synth = SyntheticCohort(seed=seed, mri_shape=MRI_SHAPE)
    ids = ID_OFFSET + np.arange(n_subjects, dtype=np.int64)
    phenotypes = synth.phenotypes(ids)
    raw = synth.raw(ids, phenotypes)
    leads = synth.modalities["ecg"].channel_names
    ecg = raw["ecg"].reshape(n_subjects, -1)
    mri = raw["mri"].reshape(n_subjects, -1)

    # A linear autoencoder per modality (the leading principal components), then a fused latent.
    z = {}
    for name, x, shape in (("ecg", ecg, raw["ecg"].shape[1:]), ("mri", mri, raw["mri"].shape[1:])):
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x[:1000] - mean, full_matrices=False)
        basis = vt[:latent_dim]  # (d, features)
        z[name] = ((x - mean) @ basis.T).astype(np.float32)
        save_linear_torchscript(folder / f"models/{name}_encoder.pt", basis, -basis @ mean, [latent_dim])
        save_linear_torchscript(folder / f"models/{name}_decoder.pt", basis.T, mean, shape)
    both = np.hstack([z["ecg"] / z["ecg"].std(), z["mri"] / z["mri"].std()])
    _, _, vt = np.linalg.svd(both - both.mean(0), full_matrices=False)
    z["fused"] = ((both - both.mean(0)) @ vt[:latent_dim].T).astype(np.float32)
    design = np.hstack([z["fused"], np.ones((n_subjects, 1), np.float32)])
    for name, x, shape in (("ecg", ecg, raw["ecg"].shape[1:]), ("mri", mri, raw["mri"].shape[1:])):
        coef, *_ = np.linalg.lstsq(design, x, rcond=None)  # fused latent → this modality, least squares
        save_linear_torchscript(folder / f"models/fused_to_{name}.pt", coef[:-1].T, coef[-1], shape)

    _write_embeddings(folder, ids, z, latent_dim)
    _write_phenotypes(folder, ids, phenotypes, seed)
    _write_raw(folder, ids[:n_records], raw["ecg"][:n_records], raw["mri"][:n_records], leads, seed)
    spec = folder / "cohort.toml"
    # A JSON list of strings or numbers is also a TOML array.
    spec.write_text(SPEC.format(name=spec.name, leads=json.dumps(list(leads)), mri_shape=json.dumps(list(MRI_SHAPE))))
    return spec


def _write_embeddings(folder: Path, ids: np.ndarray, z: dict[str, np.ndarray], dim: int) -> None:
    import anndata

    rng = np.random.default_rng(1)
    ecg = pd.DataFrame(z["ecg"], columns=[f"z_{i:02d}" for i in range(dim)])
    ecg.insert(0, "eid", ids)
    ecg.to_parquet(folder / "embeddings/ecg.parquet", index=False)
    order = rng.permutation(len(ids))  # another row order: the import joins on the id, not the position
    mri = pd.DataFrame(z["mri"][order], columns=[f"m_{i:02d}" for i in range(dim)])
    mri.insert(0, "eid", ids[order])
    mri.insert(1, "scanner", "1.5T")  # a non-embedding column, left out by prefix = "m_"
    mri.to_csv(folder / "embeddings/mri.csv", index=False, float_format="%.7g")
    np.save(folder / "embeddings/fused.npy", z["fused"])
    (folder / "embeddings/fused_ids.txt").write_text("\n".join(map(str, ids)) + "\n")
    adata = anndata.AnnData(obs=pd.DataFrame(index=[str(i) for i in ids]),
                            obsm={f"X_{kind}": block for kind, block in z.items()})
    adata.write_h5ad(folder / "embeddings/all.h5ad")


def _write_phenotypes(folder: Path, ids: np.ndarray, phenotypes: pd.DataFrame, seed: int) -> None:
    rng = np.random.default_rng(seed + 7)
    table = pd.DataFrame({"eid": ids})
    for name in ("age", "bmi", "sbp", "heart_rate", "qrs_duration", "qtc", "lvedv", "lvef", "lv_mass"):
        table[name] = phenotypes[name].to_numpy().round(2)
    table["sex"] = np.where(phenotypes["sex"].to_numpy() == 1, "male", "female")
    table["af"] = phenotypes["af"].to_numpy().astype(int)
    table["hypertension"] = np.where(phenotypes["hypertension"].to_numpy() == 1, "yes", "no")
    table["site"] = rng.choice(["Cheadle", "Newcastle", "Reading"], size=len(ids))
    table["note"] = [f"visit {i}" for i in rng.integers(0, 10**6, size=len(ids))]
    table.loc[rng.random(len(ids)) < 0.03, "lvef"] = np.nan  # a few missing values, as in any registry
    table = table.iloc[rng.permutation(len(ids))]
    table.to_csv(folder / "phenotypes.csv", index=False)


def _write_raw(folder: Path, ids: np.ndarray, ecg: np.ndarray, mri: np.ndarray, leads: tuple[str, ...], seed: int) -> None:
    """WFDB rhythm strips (three beats, 500 Hz), some DICOM waveforms (1000 Hz); NIfTI cines, some DICOM."""
    from scipy import signal

    ecg_rows, mri_rows = [], []
    for i, (eid, beat, cine) in enumerate(zip(ids, ecg, mri)):
        strip = np.tile(beat, 3)  # a 1.2 s beat repeated: the raw record is longer than the decoded one
        if i % 5 == 4:
            path = f"ecg/{eid}.dcm"
            order = [leads.index(lead) for lead in ECG_LEADS_DICOM_ORDER]
            write_dicom_ecg(folder / "raw" / path, signal.resample_poly(strip[order], 2, 1, axis=1), 1000.0,
                            ECG_LEADS_DICOM_ORDER, patient_id=str(eid))
        else:
            path = f"ecg/{eid}"
            write_wfdb(folder / "raw" / path, strip, 500.0, leads)
        ecg_rows.append((eid, path))
        if i % 5 == 3:
            path = f"mri/{eid}.dcm"
            write_dicom_cine(folder / "raw" / path, cine, 40.0, patient_id=str(eid))
        elif i % 10 == 7:
            path = f"mri/{eid}"
            write_dicom_series(folder / "raw" / path, cine, 40.0, patient_id=str(eid))
        else:
            path = f"mri/{eid}.nii.gz"
            write_nifti_cine(folder / "raw" / path, cine, 40.0)
        mri_rows.append((eid, path))
    pd.DataFrame(ecg_rows, columns=["eid", "path"]).to_csv(folder / "raw/ecg_records.csv", index=False)
    pd.DataFrame(mri_rows, columns=["eid", "path"]).to_parquet(folder / "raw/mri_records.parquet", index=False)


# -- writers, each with the format's own library --------------------------------------------------
def write_wfdb(path: Path, values: np.ndarray, rate: float, channel_names: tuple[str, ...]) -> Path:
    """A WFDB record (``path.hea`` + ``path.dat``) of ``values`` ``(channels, samples)`` in mV."""
    import wfdb

    path.parent.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(path.name, fs=rate, units=["mV"] * len(channel_names), sig_name=list(channel_names),
                p_signal=np.asarray(values, dtype=np.float64).T, fmt=["16"] * len(channel_names), write_dir=str(path.parent))
    return path


def _file_meta(sop_class: str) -> tuple[object, object]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds, meta


def write_dicom_ecg(path: Path, values: np.ndarray, rate: float, channel_names: tuple[str, ...], *, patient_id: str = "") -> Path:
    """A DICOM 12-lead ECG waveform object of ``values`` ``(channels, samples)`` in mV (stored as µV integers)."""
    from pydicom.dataset import Dataset

    ds, _ = _file_meta("1.2.840.10008.5.1.4.1.1.9.1.1")  # 12-lead ECG Waveform Storage
    ds.Modality, ds.PatientID = "ECG", patient_id
    wave = Dataset()
    wave.WaveformOriginality = "ORIGINAL"
    wave.NumberOfWaveformChannels = len(channel_names)
    wave.NumberOfWaveformSamples = values.shape[1]
    wave.SamplingFrequency = rate
    wave.WaveformBitsAllocated = 16
    wave.WaveformSampleInterpretation = "SS"
    channels = []
    for name in channel_names:
        channel, source, units = Dataset(), Dataset(), Dataset()
        source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning = name, "SCPECG", f"Lead {name}"
        units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = "uV", "UCUM", "microvolt"
        channel.ChannelSourceSequence = [source]
        channel.ChannelSensitivityUnitsSequence = [units]
        channel.ChannelSensitivity, channel.ChannelSensitivityCorrectionFactor = 1.0, 1.0
        channel.ChannelBaseline, channel.WaveformBitsStored, channel.ChannelSampleSkew = 0, 16, 0
        channels.append(channel)
    wave.ChannelDefinitionSequence = channels
    wave.WaveformData = np.round(np.asarray(values).T * 1000).astype(np.int16).tobytes()
    ds.WaveformSequence = [wave]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _image_dataset(frames: np.ndarray, patient_id: str) -> object:
    ds, _ = _file_meta("1.2.840.10008.5.1.4.1.1.4")  # MR Image Storage
    ds.Modality, ds.PatientID = "MR", patient_id
    ds.RescaleSlope, ds.RescaleIntercept = 0.001, 0  # values in [0, 1] stored as thousandths
    return ds


def write_dicom_cine(path: Path, frames: np.ndarray, frame_interval_ms: float, *, patient_id: str = "") -> Path:
    """A multi-frame DICOM MR object of ``frames`` ``(frames, height, width)`` with its frame time."""
    ds = _image_dataset(frames, patient_id)
    ds.NumberOfFrames, ds.FrameTime = len(frames), frame_interval_ms
    ds.set_pixel_data(np.round(np.clip(frames, 0, 60) * 1000).astype(np.uint16), "MONOCHROME2", 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicom_series(folder: Path, frames: np.ndarray, frame_interval_ms: float, *, patient_id: str = "") -> Path:
    """One single-frame DICOM file per frame in ``folder``: one series, ordered by trigger time."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    for t, frame in enumerate(frames):
        ds = _image_dataset(frame, patient_id)
        ds.SeriesInstanceUID, ds.InstanceNumber, ds.TriggerTime = series, t + 1, t * frame_interval_ms
        ds.set_pixel_data(np.round(np.clip(frame, 0, 60) * 1000).astype(np.uint16), "MONOCHROME2", 16)
        ds.save_as(folder / f"IM{t:04d}.dcm", enforce_file_format=True)
    return folder


def write_nifti_cine(path: Path, frames: np.ndarray, frame_interval_ms: float) -> Path:
    """A 4-D NIfTI ``(x, y, 1, t)`` of ``frames`` ``(frames, height, width)``, time step in ms."""
    import nibabel

    # Inverse of the reader's voxel → screen mapping: rows run along j, the top row the highest j.
    data = np.transpose(np.asarray(frames, dtype=np.float32)[:, ::-1, :], (2, 1, 0))[:, :, None, :]
    image = nibabel.Nifti1Image(data, np.eye(4))
    image.header.set_xyzt_units("mm", "msec")
    image.header.set_zooms((1.0, 1.0, 1.0, float(frame_interval_ms)))
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(image, str(path))
    return path
