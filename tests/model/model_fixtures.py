"""Tiny fake cohorts for the model tests: structured data keyed on ids, tiny shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lse_panel.cohort.schema import ImageSequenceModality, SignalModality
from lse_panel.model.training import TrainingData

TINY_ECG = (12, 64)
TINY_MRI = (4, 16, 16)
TINY_OPTIONS = {"ecg_widths": (8, 16), "mri_widths": (8, 16)}


def tiny_modalities(ecg_shape=TINY_ECG, mri_shape=TINY_MRI) -> dict:
    leads, samples = ecg_shape
    return {
        "ecg": SignalModality("ecg", tuple(f"L{i}" for i in range(leads)), samples, 500.0),
        "mri": ImageSequenceModality("mri", *mri_shape, frame_interval_ms=50.0),
    }


def tiny_raw(ids: np.ndarray, ecg_shape=TINY_ECG, mri_shape=TINY_MRI) -> tuple[dict, pd.DataFrame]:
    """Structured fake data keyed on ids: a shared factor drives both modalities, so there is something to learn."""
    ids = np.asarray(ids, dtype=np.int64)
    keyed = [np.random.default_rng(int(i)) for i in ids]
    f = np.array([g.normal(size=3) for g in keyed], dtype=np.float32)  # hidden factors per subject
    t = np.linspace(0, 1, ecg_shape[1], dtype=np.float32)
    centre = 0.5 + 0.1 * np.tanh(f[:, 1:2])
    beat = (1 + 0.3 * f[:, :1]) * np.exp(-((t[None, :] - centre) ** 2) / 0.004)
    gains = np.linspace(0.5, 1.5, ecg_shape[0], dtype=np.float32)
    ecg = beat[:, None, :] * gains[None, :, None]
    frames, h, w = mri_shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = (yy - h / 2) ** 2 + (xx - w / 2) ** 2
    radius = (h / 4) * (1 + 0.2 * np.tanh(f[:, 0:1] + f[:, 2:3]))[:, :, None, None]
    squeeze = 1 - 0.3 * np.sin(np.linspace(0, np.pi, frames, dtype=np.float32))[None, :, None, None]
    mri = (r2[None, None] < (radius * squeeze) ** 2).astype(np.float32)
    ecg = ecg + 0.01 * np.stack([g.normal(size=ecg_shape) for g in keyed]).astype(np.float32)
    ph = pd.DataFrame({"age": 60 + 8 * f[:, 0], "qrs_duration": 90 + 8 * f[:, 1], "sex": (f[:, 2] > 0).astype(np.int8)})
    return {"ecg": ecg.astype(np.float32), "mri": mri}, ph


def tiny_data(n: int, ecg_shape=TINY_ECG, mri_shape=TINY_MRI) -> TrainingData:
    def fetch(ids):
        return tiny_raw(ids, ecg_shape, mri_shape)

    return TrainingData(fetch, np.arange(n), tiny_modalities(ecg_shape, mri_shape), "tiny test data")


TINY_TRAIN = dict(n_train=256, n_val=32, n_eval=96, steps=12, batch_size=16, checkpoint_every=6, fusion_steps=20, progress=False,
                  latent_dim=8, model_options=TINY_OPTIONS, threads=1)
