"""Synthetic cine MRI: shape, determinism, and that the images follow the LV phenotypes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from lse_panel.synth.mri import DEFAULT_MRI_SHAPE, _lv_geometry, cycle_contraction, generate_mri, mri_modality
from lse_panel.synth.phenotypes import generate_phenotypes

SEED = 0
N = 1500


@pytest.fixture(scope="module")
def cohort() -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    ids = np.arange(N)
    ph = generate_phenotypes(ids, SEED)
    return ids, ph, generate_mri(ph, ids, SEED)


def test_shape_dtype_range(cohort) -> None:
    _, _, mri = cohort
    assert mri.shape == (N, *DEFAULT_MRI_SHAPE) and mri.dtype == np.float32
    assert np.isfinite(mri).all() and mri.min() >= 0.0
    assert np.quantile(mri, 0.999) < 1.3
    mod = mri_modality()
    assert mod.name == "mri" and mod.shape == DEFAULT_MRI_SHAPE
    assert mod.frame_interval_ms * mod.n_frames == pytest.approx(1000.0)


def test_configurable_shape() -> None:
    ids = np.arange(3)
    ph = generate_phenotypes(ids, SEED)
    out = generate_mri(ph, ids, SEED, shape=(5, 32, 40))
    assert out.shape == (3, 5, 32, 40)
    assert mri_modality((5, 32, 40)).shape == (5, 32, 40)


def test_deterministic_whatever_the_batch(cohort) -> None:
    ids, ph, mri = cohort
    pick = np.array([1499, 0, 700])
    again = generate_mri(ph.iloc[pick].reset_index(drop=True), ids[pick], SEED)
    np.testing.assert_array_equal(again, mri[pick])
    assert not np.allclose(generate_mri(ph.iloc[pick].reset_index(drop=True), ids[pick], SEED + 1), mri[pick])


def test_cycle_starts_and_ends_at_end_diastole() -> None:
    c = cycle_contraction(np.linspace(0, 1, 101))
    assert c[0] == pytest.approx(0) and c[-1] == pytest.approx(0, abs=1e-9)
    assert c.max() == pytest.approx(1) and 0.3 <= np.linspace(0, 1, 101)[c.argmax()] <= 0.4


def _lv_box(frames: np.ndarray) -> np.ndarray:
    # The LV sits right of centre and above the AV plane (apex up-right; atria below row ~31 of 48).
    return frames[..., :30, 25:]


def test_lv_cavity_shrinks_by_ejection_fraction(cohort) -> None:
    _, ph, mri = cohort
    bright = (_lv_box(mri) > 0.55).sum(axis=(2, 3)).astype(float)
    ed, es = bright[:, 0], bright.min(axis=1)
    assert (ed > es).mean() > 0.99
    shrink = (ed - es) / ed
    assert np.corrcoef(shrink, ph["lvef"])[0, 1] > 0.6
    low = ph["lvef"].to_numpy() < 45
    assert low.sum() >= 5 and np.median(shrink[low]) < 0.6 * np.median(shrink[~low])


def test_lvh_walls_are_thicker(cohort) -> None:
    _, ph, mri = cohort
    edv, mass = ph["lvedv"].to_numpy(np.float64), ph["lv_mass"].to_numpy(np.float64)
    _, _, wall = _lv_geometry(edv, edv, mass)
    lvh = ph["lvh"].to_numpy() == 1
    assert wall[lvh].mean() > 1.2 * wall[~lvh].mean()
    # In the images: the 2-pixel ring around the end-diastolic LV cavity is darker when more of it is muscle.
    ring_mean = np.empty(N)
    for k, frame in enumerate(_lv_box(mri[:, 0])):
        cavity = ndimage.binary_opening(frame > 0.55)
        ring = ndimage.binary_dilation(cavity, iterations=2) & ~cavity
        ring_mean[k] = frame[ring].mean()
    assert np.corrcoef(ring_mean, wall)[0, 1] < -0.2
    assert ring_mean[lvh].mean() < ring_mean[~lvh].mean()
