"""Raw records in the formats cardiology and imaging use (WFDB, DICOM, NIfTI, ``.npy``), read into one shape per kind.

A *signal* record is ``(channels, samples)`` at its own sampling rate with its channel names; an
*image sequence* record is ``(frames, height, width)`` with its own frame interval. Real files
differ from each other and from what a decoder produces (a 10 s rhythm strip at 1000 Hz against a
600-sample median beat at 500 Hz), so each record keeps its own timing; :func:`conform` brings one
to a declared modality's shape when a fixed shape is needed (an encoder's input).

``wfdb``, ``pydicom`` and ``nibabel`` are imported inside the readers that need them, so reading
a bundle without raw files never loads them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lse_panel.cohort.schema import BundleError, ImageSequenceModality, Modality, SignalModality

RecordFormat = Literal["wfdb", "dicom", "nifti", "npy"]
RECORD_FORMATS: tuple[str, ...] = ("wfdb", "dicom", "nifti", "npy")

_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_LEAD_BY_LOWER = {lead.lower(): lead for lead in _LEADS}
_TIME_UNITS_MS = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}
_MICROVOLTS = {"uv", "µv", "μv", "microvolt", "microvolts"}


class RecordError(BundleError):
    """A raw record cannot be read or does not fit its modality; the message names the file and the fix."""


@dataclass(frozen=True)
class SignalRecord:
    """One signal record: ``values`` ``(channels, samples)`` float32 at ``sampling_rate_hz``."""

    values: np.ndarray
    sampling_rate_hz: float
    channel_names: tuple[str, ...]
    units: str
    path: str
    notes: tuple[str, ...] = ()
    kind: str = field(default="signal", init=False)

    def time_ms(self) -> np.ndarray:
        """Each sample's time in milliseconds from the record's start."""
        return np.arange(self.values.shape[1], dtype=np.float64) * (1000.0 / self.sampling_rate_hz)


@dataclass(frozen=True)
class ImageSequenceRecord:
    """One image sequence: ``values`` ``(frames, height, width)`` float32, one frame every ``frame_interval_ms``."""

    values: np.ndarray
    frame_interval_ms: float
    path: str
    notes: tuple[str, ...] = ()
    kind: str = field(default="image_sequence", init=False)

    def time_ms(self) -> np.ndarray:
        """Each frame's time in milliseconds from the first."""
        return np.arange(self.values.shape[0], dtype=np.float64) * self.frame_interval_ms


Record = SignalRecord | ImageSequenceRecord


def lead_name(name: str) -> str:
    """A channel name in the usual 12-lead spelling when it is one (``"Lead I (Einthoven)"``, ``"i"`` → ``"I"``)."""
    text = re.sub(r"\(.*?\)", "", str(name)).strip()
    text = re.sub(r"^lead\s+", "", text, flags=re.IGNORECASE).strip()
    return _LEAD_BY_LOWER.get(text.lower(), str(name).strip())


def record_format(path: str | os.PathLike[str]) -> str:
    """The format a raw file is in, from its name: ``.hea``/``.dat`` WFDB, ``.dcm`` or a folder DICOM,
    ``.nii``/``.nii.gz`` NIfTI, ``.npy``; :class:`RecordError` when the name does not tell."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".hea", ".dat")) or path.with_suffix(".hea").exists() or Path(f"{path}.hea").exists():
        return "wfdb"
    if name.endswith((".dcm", ".dicom")) or path.is_dir():
        return "dicom"
    raise RecordError(
        f"{path}: cannot tell the format from the file name. Set `format` to one of "
        f"{', '.join(RECORD_FORMATS)} for this modality in the import spec."
    )


def read_record(
    path: str | os.PathLike[str],
    kind: str,
    *,
    format: str | None = None,
    modality: Modality | None = None,
    options: dict[str, Any] | None = None,
) -> Record:
    """Read one raw record.

    Parameters
    ----------
    path
        The file (a WFDB record may be named with or without ``.hea``; a DICOM image series
        may be a folder of one series' files).
    kind
        ``"signal"`` or ``"image_sequence"``: what the record is of.
    format
        One of :data:`RECORD_FORMATS`; inferred from the name when omitted (:func:`record_format`).
    modality
        The declared modality: supplies the sampling rate, channel names or frame interval a
        file does not carry itself (``.npy``, a NIfTI without time units).
    options
        Format options: ``waveform`` (which DICOM waveform group, default 0), ``slice`` (which
        slice of a 4-D NIfTI, default the middle one).

    Returns
    -------
    SignalRecord or ImageSequenceRecord

    Raises
    ------
    RecordError
        The file is missing or unreadable, or holds something other than ``kind``.
    """
    path = Path(path)
    if kind not in ("signal", "image_sequence"):
        raise RecordError(f"{path}: kind {kind!r}; a record is a 'signal' or an 'image_sequence'.")
    fmt = format or record_format(path)
    readers = {"wfdb": _read_wfdb, "dicom": _read_dicom, "nifti": _read_nifti, "npy": _read_npy}
    if fmt not in readers:
        raise RecordError(f"{path}: unknown format {fmt!r}; use one of {', '.join(RECORD_FORMATS)}.")
    if fmt == "wfdb":
        exists = path.exists() or path.with_suffix(".hea").exists() or Path(f"{path}.hea").exists()
    else:
        exists = path.exists()
    if not exists:
        raise RecordError(f"{path}: no such file. Fix its path in the records table, or drop that row.")
    try:
        record = readers[fmt](path, kind, options or {})
    except RecordError:
        raise
    except Exception as exc:  # every library raises its own types; name the file and the cause
        raise RecordError(
            f"{path}: cannot be read as {fmt} ({type(exc).__name__}: {exc}). Check the file (is it "
            f"complete, is it {fmt}?) or set the right `format` for this modality."
        ) from None
    return _fill_from_modality(record, modality)


def _fill_from_modality(record: Record, modality: Modality | None) -> Record:
    """Take what the file did not say (rate, channel names, frame interval) from the declared modality."""
    if isinstance(record, SignalRecord):
        notes = list(record.notes)
        rate, names = record.sampling_rate_hz, record.channel_names
        if not rate:
            if not isinstance(modality, SignalModality):
                raise RecordError(f"{record.path}: the file gives no sampling rate; declare `sampling_rate_hz` for the modality.")
            rate = modality.sampling_rate_hz
            notes.append(f"sampling rate {rate:g} Hz from the modality declaration")
        if not names:
            if isinstance(modality, SignalModality) and len(modality.channel_names) == record.values.shape[0]:
                names = modality.channel_names
            else:
                names = tuple(f"ch{i + 1}" for i in range(record.values.shape[0]))
        return replace(record, sampling_rate_hz=float(rate), channel_names=tuple(names), notes=tuple(notes))
    if not record.frame_interval_ms:
        if not isinstance(modality, ImageSequenceModality):
            raise RecordError(f"{record.path}: the file gives no frame timing; declare `frame_interval_ms` for the modality.")
        return replace(record, frame_interval_ms=float(modality.frame_interval_ms),
                       notes=(*record.notes, f"frame interval {modality.frame_interval_ms:g} ms from the modality declaration"))
    return record


def _wrong_kind(path: Path, kind: str, found: str, fix: str) -> RecordError:
    return RecordError(f"{path}: holds {found}, but the modality is a {kind}. {fix}")


# -- WFDB -----------------------------------------------------------------------------------------
def _read_wfdb(path: Path, kind: str, options: dict[str, Any]) -> Record:
    import wfdb

    if kind != "signal":
        raise _wrong_kind(path, kind, "a WFDB signal record", "Declare this modality with kind = 'signal'.")
    name = str(path)[: -len(path.suffix)] if path.suffix.lower() in (".hea", ".dat") else str(path)
    record = wfdb.rdrecord(name)
    if record.p_signal is None:
        raise RecordError(f"{path}: the WFDB record holds no physical signal; re-export it with units and gains.")
    values = np.asarray(record.p_signal, dtype=np.float32).T
    units = [str(u) for u in (record.units or [])]
    scale, unit = _to_millivolts(units[0] if units else "")
    if len(set(units)) > 1:
        unit = "mixed"
    return SignalRecord(values * scale, float(record.fs), tuple(lead_name(n) for n in record.sig_name or ()), unit, str(path))


def _to_millivolts(unit: str) -> tuple[float, str]:
    """ECGs are shown in mV: microvolt channels are scaled by 1/1000, anything else kept."""
    if unit.strip().lower() in _MICROVOLTS:
        return 1e-3, "mV"
    return 1.0, unit or "a.u."


# -- DICOM ----------------------------------------------------------------------------------------
def _read_dicom(path: Path, kind: str, options: dict[str, Any]) -> Record:
    import pydicom

    if path.is_dir():
        if kind != "image_sequence":
            raise _wrong_kind(path, kind, "a folder (an image series)", "Point the records table at the waveform file itself.")
        return _read_dicom_series(path)
    ds = pydicom.dcmread(path)
    if kind == "signal":
        if "WaveformSequence" not in ds:
            raise _wrong_kind(path, kind, f"a DICOM {ds.get('Modality', '')} object without waveforms",
                              "Use a DICOM waveform (e.g. 12-lead ECG) file, or declare kind = 'image_sequence'.")
        return _dicom_waveform(ds, path, int(options.get("waveform", 0)))
    if "PixelData" not in ds:
        raise _wrong_kind(path, kind, "a DICOM object without pixel data", "Declare this modality with kind = 'signal' if it is a waveform.")
    frames = _dicom_pixels(ds)
    return ImageSequenceRecord(frames, _dicom_frame_interval(ds) or 0.0, str(path))


def _dicom_waveform(ds: Any, path: Path, group: int) -> SignalRecord:
    waveforms = ds.WaveformSequence
    if not 0 <= group < len(waveforms):
        raise RecordError(f"{path}: has {len(waveforms)} waveform group(s); option waveform = {group} is out of range.")
    item = waveforms[group]
    values = np.asarray(ds.waveform_array(group), dtype=np.float32).T
    names, units = [], []
    for channel in item.ChannelDefinitionSequence:
        source = channel.get("ChannelSourceSequence")
        names.append(lead_name(source[0].CodeMeaning) if source else f"ch{len(names) + 1}")
        unit_seq = channel.get("ChannelSensitivityUnitsSequence")
        units.append(str(unit_seq[0].CodeValue) if unit_seq else "")
    scale, unit = _to_millivolts(units[0] if units else "")
    notes = (f"waveform group {group} of {len(waveforms)}",) if len(waveforms) > 1 else ()
    return SignalRecord(values * scale, float(item.SamplingFrequency), tuple(names), unit, str(path), notes)


def _dicom_pixels(ds: Any) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    pixels = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples > 1:  # colour: shown as grey, the mean of the channels
        pixels = pixels.mean(axis=-1)
    return pixels.reshape(n_frames, *pixels.shape[-2:]) if n_frames > 1 else pixels.reshape(1, *pixels.shape[-2:])


def _dicom_frame_interval(ds: Any) -> float | None:
    if ds.get("FrameTime"):
        return float(ds.FrameTime)
    if ds.get("CineRate"):
        return 1000.0 / float(ds.CineRate)
    return None


def _read_dicom_series(folder: Path) -> ImageSequenceRecord:
    import pydicom

    slices = []
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(file)
        except Exception:  # noqa: BLE001 - a DICOMDIR, a text note: not one of the series' images
            continue
        if "PixelData" in ds:
            slices.append(ds)
    if not slices:
        raise RecordError(f"{folder}: no DICOM image in this folder. Point the records table at one series' folder.")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in slices}
    if len(series) > 1:
        raise RecordError(
            f"{folder}: holds {len(series)} DICOM series; an image sequence is one series. "
            "Give each series its own folder (or its own row)."
        )
    has_trigger = all(ds.get("TriggerTime") not in (None, "") for ds in slices)
    slices.sort(key=lambda ds: (float(ds.TriggerTime) if has_trigger else 0.0, int(ds.get("InstanceNumber", 0) or 0)))
    shapes = {tuple(ds.pixel_array.shape[-2:]) for ds in slices}
    if len(shapes) > 1:
        raise RecordError(f"{folder}: the series' images differ in size ({sorted(shapes)}); frames must share one size.")
    frames = np.concatenate([_dicom_pixels(ds) for ds in slices])
    interval = None
    notes = ["frames ordered by trigger time" if has_trigger else "frames ordered by instance number"]
    if has_trigger and len(slices) > 1:
        interval = float(np.median(np.diff([float(ds.TriggerTime) for ds in slices])))
    elif len(slices) == 1:
        interval = _dicom_frame_interval(slices[0])
    return ImageSequenceRecord(frames, interval or 0.0, str(folder), tuple(notes))


# -- NIfTI ----------------------------------------------------------------------------------------
def _read_nifti(path: Path, kind: str, options: dict[str, Any]) -> Record:
    import nibabel

    if kind != "image_sequence":
        raise _wrong_kind(path, kind, "a NIfTI image", "Declare this modality with kind = 'image_sequence'.")
    image = nibabel.load(str(path))
    data = np.asanyarray(image.dataobj)
    notes = []
    if data.ndim == 4:  # (x, y, slice, time): one slice's cine
        z = int(options.get("slice", data.shape[2] // 2))
        if not 0 <= z < data.shape[2]:
            raise RecordError(f"{path}: has {data.shape[2]} slices; option slice = {z} is out of range.")
        data = data[:, :, z, :]
        if image.shape[2] > 1:
            notes.append(f"slice {z} of {image.shape[2]}")
    elif data.ndim == 2:
        data = data[:, :, None]
    elif data.ndim != 3:
        raise RecordError(f"{path}: has {data.ndim} dimensions {image.shape}; an image sequence is (x, y, t) or (x, y, slice, t).")
    # Voxel (i, j) → screen: rows run along j, top row the highest j (the usual radiological view).
    frames = np.ascontiguousarray(np.transpose(np.asarray(data, dtype=np.float32), (2, 1, 0))[:, ::-1, :])
    interval = None
    zooms = image.header.get_zooms()
    _, time_unit = image.header.get_xyzt_units()
    if image.ndim == 4 and len(zooms) > 3 and time_unit in _TIME_UNITS_MS and zooms[3] > 0:
        interval = float(zooms[3]) * _TIME_UNITS_MS[time_unit]
        if time_unit == "sec" and zooms[3] > 100:
            # No cine or series has frames minutes apart: a header saying 2000 "sec" means 2000 ms
            # (nibabel's own example4d.nii.gz is written that way).
            interval = float(zooms[3])
            notes.append(f"time step {float(zooms[3]):g} labelled seconds, read as ms")
    return ImageSequenceRecord(frames, interval or 0.0, str(path), tuple(notes))


# -- .npy -----------------------------------------------------------------------------------------
def _read_npy(path: Path, kind: str, options: dict[str, Any]) -> Record:
    values = np.load(path, allow_pickle=False)
    if kind == "signal":
        if values.ndim != 2:
            raise RecordError(f"{path}: array of shape {values.shape}; a signal record is (channels, samples).")
        return SignalRecord(np.asarray(values, dtype=np.float32), 0.0, (), "", str(path))
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise RecordError(f"{path}: array of shape {values.shape}; an image sequence is (frames, height, width).")
    return ImageSequenceRecord(np.asarray(values, dtype=np.float32), 0.0, str(path))


# -- one shape per modality -----------------------------------------------------------------------
def conform(record: Record, modality: Modality) -> np.ndarray:
    """``record`` brought to ``modality``'s shape: what a fixed-shape encoder takes.

    Signals: channels picked by name in the declared order (by position when the file names
    none), resampled to the declared rate, then the first ``n_samples`` kept (zero-padded if
    shorter). Image sequences: every frame resampled (linear) to the declared height and width,
    and the frames resampled to the declared count.

    Raises
    ------
    RecordError
        The record's kind or channels do not match the modality.
    """
    from scipy import ndimage, signal

    if record.kind != modality.kind:
        raise RecordError(f"{record.path}: a {record.kind} record for the {modality.kind} modality {modality.name!r}.")
    if isinstance(record, SignalRecord):
        assert isinstance(modality, SignalModality)
        values = _pick_channels(record, modality)
        if abs(record.sampling_rate_hz - modality.sampling_rate_hz) > 1e-6:
            up, down = _ratio(modality.sampling_rate_hz, record.sampling_rate_hz)
            values = signal.resample_poly(values, up, down, axis=1).astype(np.float32)
        out = np.zeros(modality.shape, dtype=np.float32)
        n = min(values.shape[1], modality.n_samples)
        out[:, :n] = values[:, :n]
        return out
    assert isinstance(modality, ImageSequenceModality)
    zoom = [t / s for t, s in zip(modality.shape, record.values.shape)]
    if all(abs(z - 1) < 1e-9 for z in zoom):
        return np.asarray(record.values, dtype=np.float32)
    return ndimage.zoom(record.values, zoom, order=1, grid_mode=True, mode="nearest").astype(np.float32)


def _pick_channels(record: SignalRecord, modality: SignalModality) -> np.ndarray:
    have = {lead_name(n): i for i, n in enumerate(record.channel_names)}
    want = [lead_name(n) for n in modality.channel_names]
    if all(name in have for name in want):
        return record.values[[have[name] for name in want]]
    if record.values.shape[0] == len(want) and not set(want) & set(have):
        return record.values  # the file names its channels otherwise (or not at all): take them in order
    missing = [name for name in want if name not in have]
    raise RecordError(
        f"{record.path}: has channels {list(record.channel_names)}; the modality {modality.name!r} needs "
        f"{list(modality.channel_names)} (missing: {missing}). Fix `channel_names` in the modality declaration."
    )


def _ratio(target: float, source: float) -> tuple[int, int]:
    from fractions import Fraction

    frac = Fraction(target / source).limit_denominator(1000)
    return frac.numerator, frac.denominator
