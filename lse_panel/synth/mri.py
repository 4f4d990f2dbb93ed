"""Synthetic cardiac cine MRI: a 4-chamber long-axis bSSFP-like slice over one cardiac cycle."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lse_panel.cohort.schema import ImageSequenceModality
from lse_panel.synth.phenotypes import hidden_factors
from lse_panel.synth.random import hash_ids, noise_bank

__all__ = ["DEFAULT_MRI_SHAPE", "FIELD_OF_VIEW_CM", "NOMINAL_CYCLE_MS", "cycle_contraction", "end_systole_phase",
           "generate_mri", "mri_modality"]

DEFAULT_MRI_SHAPE = (16, 48, 48)
"""(frames, height, width) of the demo cine; UK Biobank's 4-chamber cines are 50 × 96 × 96 (ml4h crops)."""
FIELD_OF_VIEW_CM = 24.0
"""Width of the image in cm whatever the matrix size, so anatomy keeps its size when the grid changes."""
NOMINAL_CYCLE_MS = 1000.0
"""Frames span one cycle of a nominal 60 bpm heart (cines are retrospectively binned per subject)."""
END_SYSTOLE_PHASE = 0.35
"""Nominal fraction of the cycle at which the LV is smallest (per subject: :func:`end_systole_phase`)."""

# bSSFP-like signal levels: bright blood, dark myocardium, grey chest wall, black lungs.
_BLOOD, _ATRIAL_BLOOD, _MYO, _BODY, _LUNG, _FAT = 0.85, 0.8, 0.15, 0.3, 0.04, 0.6
_FAT_CM = 0.35  # epicardial fat, bright in bSSFP: it is what outlines the myocardium
_EDGE_CM = 0.4  # width of the partial-volume ramp at every boundary
_AV_GAP_CM = 0.35  # valve annulus between ventricles and atria
_RV_WALL_CM = 0.35
_MYO_DENSITY = 1.05  # g/mL
# Reference LV masses exclude papillary muscles and trabeculation, which look like myocardium
# in a cine; drawing 1.4x the compact mass gives the ~1 cm walls seen in images.
_APPARENT_MYO_FACTOR = 1.4
_LV_LENGTH_TO_RADIUS = 2.5
_NOISE_BANK = 512  # noise fields per frame shape; each subject picks one per frame by hash


def mri_modality(shape: tuple[int, int, int] = DEFAULT_MRI_SHAPE) -> ImageSequenceModality:
    """Describe the synthetic cine as an image-sequence modality.

    Parameters
    ----------
    shape
        (frames, height, width).

    Returns
    -------
    ImageSequenceModality
        Name ``"mri"``; the frame interval is the nominal 1000 ms cycle over the frames.
    """
    n_frames, height, width = (int(s) for s in shape)
    return ImageSequenceModality(
        name="mri",
        n_frames=n_frames,
        height=height,
        width=width,
        frame_interval_ms=NOMINAL_CYCLE_MS / n_frames,
        units="a.u.",
        description="Synthetic bSSFP cine, 4-chamber long axis, one cardiac cycle from end-diastole "
        "(apex up and to the right, LV on the image's right, atria below)",
    )


def end_systole_phase(heart_rate: np.ndarray, qtc: np.ndarray) -> np.ndarray:
    """Cycle phase of end-systole from the ECG's timing: mechanical systole ends near the T-wave end.

    QT = QTc * sqrt(RR) (Bazett), so QT/RR = QTc / sqrt(RR): systole takes a larger fraction of the
    cycle at fast heart rates. Scaled by 0.85 (aortic closure a little before the T-wave end) and
    clipped to [0.25, 0.55].
    """
    rr = 60.0 / np.asarray(heart_rate, dtype=np.float64)
    return np.clip(0.85 * np.asarray(qtc, dtype=np.float64) / 1000.0 / np.sqrt(rr), 0.25, 0.55)


def cycle_contraction(phase: np.ndarray, es: np.ndarray | float = END_SYSTOLE_PHASE) -> np.ndarray:
    """Fraction of the stroke volume ejected at each cycle phase (0 at end-diastole, 1 at end-systole).

    Ejection, rapid filling, diastasis, then the atrial kick back to end-diastole.

    Parameters
    ----------
    phase
        Cycle phase in [0, 1).
    es
        End-systolic phase (scalar or broadcastable to ``phase``); rapid filling lasts 0.25 after it.

    Returns
    -------
    numpy.ndarray
        Contraction in [0, 1], shaped like ``phase``.
    """
    p = np.asarray(phase, dtype=np.float64) % 1.0
    es = np.asarray(es, dtype=np.float64)
    fe = es + 0.25  # end of rapid filling
    eject = 0.5 * (1 - np.cos(np.pi * np.minimum(p / es, 1.0)))
    fill = 0.25 + 0.375 * (1 + np.cos(np.pi * np.clip((p - es) / (fe - es), 0, 1)))
    diastasis = 0.25 - 0.05 * np.clip((p - fe) / (0.85 - fe), 0, 1)
    kick = 0.1 * (1 + np.cos(np.pi * np.clip((p - 0.85) / 0.15, 0, 1)))
    return np.select([p < es, p < fe, p < 0.85], [eject, fill, diastasis], kick)


def _lv_geometry(volume: np.ndarray, edv: np.ndarray, mass: np.ndarray) -> tuple[np.ndarray, ...]:
    """Long and short cavity semi-axes and wall thickness (cm) of a half prolate ellipsoid LV.

    The myocardial volume stays constant over the cycle (muscle is incompressible), so the
    wall thickens as the cavity empties.
    """
    r_ed = np.cbrt(3.0 * edv / (2.0 * np.pi * _LV_LENGTH_TO_RADIUS))
    length = _LV_LENGTH_TO_RADIUS * r_ed * (volume / edv) ** 0.25  # long axis shortens less than short
    radius = np.sqrt(3.0 * volume / (2.0 * np.pi * length))
    target = 3.0 * (_APPARENT_MYO_FACTOR * mass / _MYO_DENSITY + volume) / (2.0 * np.pi)
    w = np.full_like(volume, 1.0)
    for _ in range(6):  # Newton on (L + w)(R + w)^2 = target; convex and increasing, converges fast
        f = (length + w) * (radius + w) ** 2 - target
        df = (radius + w) ** 2 + 2 * (length + w) * (radius + w)
        w = np.maximum(w - f / df, 0.2)
    return length, radius, w


def _frame_geometry(ph: dict[str, np.ndarray], hf: dict[str, np.ndarray], n_frames: int) -> np.ndarray:
    """Per-subject, per-frame anatomy in cm: (n, frames, N_FRAME_PARAMS) float32."""
    from lse_panel.synth import _mri_kernel as K  # numba loads on first use, not on import
    es = end_systole_phase(ph["heart_rate"], ph["qtc"])[:, None]
    c = cycle_contraction(np.arange(n_frames)[None, :] / n_frames, es)
    edv, esv, mass = ph["lvedv"][:, None], ph["lvesv"][:, None], ph["lv_mass"][:, None]
    length, radius, wall = _lv_geometry(edv - c * (edv - esv), edv, mass)
    r_ed, w_ed = radius[:, :1], wall[:, :1]
    atria = hf["atrial_scale"][:, None] * (1.0 + 0.3 * c)  # atria fill while the ventricles empty
    geo = np.empty(length.shape + (K.N_FRAME_PARAMS,), dtype=np.float32)
    geo[..., K.LV_L], geo[..., K.LV_R], geo[..., K.LV_W] = length, radius, wall
    geo[..., K.RV_L] = 0.85 * length[:, :1] * (1.0 - 0.1 * c)
    geo[..., K.RV_R] = 0.8 * r_ed * (1.0 - 0.3 * c)
    # LA under the LV cavity, RA under the RV cavity (end-diastolic positions: the AV plane is fixed).
    geo[..., K.LA_A], geo[..., K.LA_B], geo[..., K.LA_V] = 2.2 * atria, 1.9 * atria, r_ed
    geo[..., K.RA_A], geo[..., K.RA_B] = 1.9 * atria, 1.6 * atria
    geo[..., K.RA_V] = -w_ed - 0.8 * r_ed
    return geo


def _pose(hf: dict[str, np.ndarray]) -> np.ndarray:
    """Per-subject pose, contrast and noise: (n, N_POSE_PARAMS) float32."""
    from lse_panel.synth import _mri_kernel as K
    angle = np.deg2rad(30.0 + hf["image_angle_deg"])  # long axis tilted so the apex points up-right
    pose = np.empty((len(angle), K.N_POSE_PARAMS), dtype=np.float32)
    pose[:, K.COS], pose[:, K.SIN] = np.cos(angle), np.sin(angle)
    pose[:, K.SCALE] = hf["image_scale"]
    pose[:, K.X0] = -1.8 + hf["image_shift_x"] * FIELD_OF_VIEW_CM  # AV-plane centre, cm from image centre
    pose[:, K.Y0] = 3.2 + hf["image_shift_y"] * FIELD_OF_VIEW_CM
    pose[:, K.CONTRAST] = hf["image_contrast"]
    pose[:, K.SIGMA] = hf["image_noise"]
    pose[:, K.BODY_X] = 0.3 * pose[:, K.X0]
    return pose


def generate_mri(
    phenotypes: pd.DataFrame,
    ids: np.ndarray,
    seed: int,
    *,
    shape: tuple[int, int, int] = DEFAULT_MRI_SHAPE,
) -> np.ndarray:
    """Generate a 4-chamber cine over one cardiac cycle for each subject.

    The LV is a half prolate ellipsoid cut through its long axis: the cavity follows
    LVEDV at frame 0 to LVESV at end-systole (about QT/RR of the cycle, 35 % nominal), the wall thickness
    keeps the myocardial volume equal to 1.4 × LV mass / 1.05 g/mL (the
    reference masses leave out papillary muscles and trabeculae), so hypertrophied walls are
    visibly thicker and every wall thickens in systole. RV, atria (larger in AF and
    hypertension), chest wall and lungs give context. Edges carry a partial-volume ramp;
    noise is Rician; pose, zoom and contrast vary a little per subject.

    Parameters
    ----------
    phenotypes
        Rows for ``ids`` (``lvedv``, ``lvesv``, ``lv_mass``; ``heart_rate`` and ``qtc`` set the
        end-systolic phase, QT/RR, see :func:`end_systole_phase`).
    ids
        The subjects' integer ids, aligned with ``phenotypes``.
    seed
        The cohort's seed (pose, contrast, noise).
    shape
        (frames, height, width); the field of view stays 24 cm wide.

    Returns
    -------
    numpy.ndarray
        float32, shape (n, frames, height, width), roughly in [0, 1].
    """
    ids = np.asarray(ids)
    n = len(ids)
    if len(phenotypes) != n:
        raise ValueError(f"phenotypes has {len(phenotypes)} rows but {n} ids were given")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (frames, height, width) of positive ints, got {shape!r}")
    hf = hidden_factors(ids, seed)
    ph = {c: phenotypes[c].to_numpy(np.float64) for c in ("lvedv", "lvesv", "lv_mass", "heart_rate", "qtc")}
    # Noise field per (subject, frame), picked by hash so it depends only on (seed, id).
    frame_keys = np.stack([hash_ids(seed, ids, f"mri_noise/{t}") for t in range(shape[0])], axis=1)
    noise_idx = (frame_keys % np.uint64(_NOISE_BANK)).astype(np.intp)
    from lse_panel.synth import _mri_kernel as K

    n_frames, height, width = shape
    pix = FIELD_OF_VIEW_CM / width
    xs = ((np.arange(width) - (width - 1) / 2) * pix).astype(np.float32)
    ys = ((np.arange(height) - (height - 1) / 2) * pix).astype(np.float32)
    bank = noise_bank(seed, "mri", (2, _NOISE_BANK, height, width))
    out = np.empty((n,) + shape, dtype=np.float32)
    K.render(
        xs, ys, _pose(hf), _frame_geometry(ph, hf, n_frames), bank[0], bank[1], noise_idx,
        np.array([_BLOOD, _ATRIAL_BLOOD, _MYO, _BODY, _LUNG, _FAT], dtype=np.float32),
        np.array([_EDGE_CM, _AV_GAP_CM, _RV_WALL_CM, _FAT_CM], dtype=np.float32),
        out,
    )
    return out
