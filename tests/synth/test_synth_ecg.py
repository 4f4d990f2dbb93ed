"""Synthetic ECG: shape, determinism, lead relations, and physiology that a wrong model would fail."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import uniform_filter1d

from lse_panel.synth.ecg import ECG_LEADS, ECG_RATE_HZ, ECG_SAMPLES, QRS_ONSET_S, ecg_modality, generate_ecg
from lse_panel.synth.phenotypes import generate_phenotypes

SEED = 0
N = 3000
L = {name: i for i, name in enumerate(ECG_LEADS)}


@pytest.fixture(scope="module")
def cohort() -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    ids = np.arange(N)
    ph = generate_phenotypes(ids, SEED)
    return ids, ph, generate_ecg(ph, ids, SEED)


def _idx(seconds: float | np.ndarray) -> np.ndarray:
    return np.round(np.asarray(seconds) * ECG_RATE_HZ).astype(int)


def test_shape_dtype_modality(cohort) -> None:
    _, _, ecg = cohort
    assert ecg.shape == (N, 12, ECG_SAMPLES) and ecg.dtype == np.float32
    assert np.isfinite(ecg).all()
    assert np.abs(ecg).max() < 10.0  # mV
    mod = ecg_modality()
    assert mod.name == "ecg" and mod.channel_names == ECG_LEADS and mod.shape == (12, 600)
    assert mod.units == "mV" and mod.sampling_rate_hz == 500.0


def test_deterministic_whatever_the_batch(cohort) -> None:
    ids, ph, ecg = cohort
    pick = np.array([17, 3, 2999])
    again = generate_ecg(ph.iloc[pick].reset_index(drop=True), ids[pick], SEED)
    np.testing.assert_array_equal(again, ecg[pick])
    other = generate_ecg(ph.iloc[pick].reset_index(drop=True), ids[pick], SEED + 1)
    assert not np.allclose(other, ecg[pick])


def test_limb_lead_relations(cohort) -> None:
    _, _, ecg = cohort
    i, ii = ecg[:, L["I"]], ecg[:, L["II"]]
    np.testing.assert_allclose(ecg[:, L["III"]], ii - i, atol=1e-5)
    np.testing.assert_allclose(ecg[:, L["aVR"]], -(i + ii) / 2, atol=1e-5)
    np.testing.assert_allclose(ecg[:, L["aVL"]] + ecg[:, L["aVF"]], (i + ii) / 2, atol=1e-5)


def test_polarity_lead_ii_upright_avr_inverted(cohort) -> None:
    _, ph, ecg = cohort
    normal = (ph["af"] == 0) & (ph["qrs_duration"] < 110)
    qrs = slice(*_idx([QRS_ONSET_S, QRS_ONSET_S + 0.1]))
    ii, avr = ecg[normal, L["II"], qrs], ecg[normal, L["aVR"], qrs]
    assert np.mean(ii.max(axis=1) > -ii.min(axis=1)) > 0.85
    assert np.mean(-avr.min(axis=1) > avr.max(axis=1)) > 0.85


def test_af_has_no_p_wave(cohort) -> None:
    _, ph, ecg = cohort
    p_on = QRS_ONSET_S - ph["pr_interval"].to_numpy() / 1000
    energy = np.empty(N)
    for k in range(N):  # window of the (expected) P wave in lead II, detrended against baseline wander
        a, b = _idx([p_on[k], p_on[k] + 0.1])
        seg = ecg[k, L["II"], a:b]
        seg = seg - np.linspace(seg[0], seg[-1], len(seg))
        energy[k] = np.sqrt(np.mean(seg**2))
    af = ph["af"].to_numpy() == 1
    assert af.sum() > 30
    assert np.median(energy[~af]) > 2.5 * np.median(energy[af])


def test_lvh_raises_v5_voltage(cohort) -> None:
    _, ph, ecg = cohort
    qrs = slice(*_idx([QRS_ONSET_S, QRS_ONSET_S + 0.2]))
    v5 = ecg[:, L["V5"], qrs].max(axis=1)
    v1_s = -ecg[:, L["V1"], qrs].min(axis=1)
    lvh = ph["lvh"].to_numpy() == 1
    assert np.median(v5[lvh]) > 1.15 * np.median(v5[~lvh])
    assert np.median(v1_s[lvh]) > 1.15 * np.median(v1_s[~lvh])
    assert np.corrcoef(v5 + v1_s, ph["lv_mass_index"])[0, 1] > 0.2  # Sokolow-Lyon tracks mass


def _measured_qrs_ms(ecg: np.ndarray) -> np.ndarray:
    """QRS span from the spatial slope: where it exceeds 30 % of its peak (a narrower core than onset-offset)."""
    smooth = uniform_filter1d(ecg, 5, axis=2)  # 10 ms moving average: raw noise slopes would swamp the threshold
    slope = np.abs(np.diff(smooth, axis=2)).sum(axis=1)
    a, b = _idx([QRS_ONSET_S - 0.03, QRS_ONSET_S + 0.22])
    win = slope[:, a:b]
    above = win > 0.3 * win.max(axis=1, keepdims=True)
    first = above.argmax(axis=1)
    last = win.shape[1] - 1 - above[:, ::-1].argmax(axis=1)
    return (last - first) / ECG_RATE_HZ * 1000


def test_wider_qrs_phenotype_measures_wider(cohort) -> None:
    _, ph, ecg = cohort
    measured = _measured_qrs_ms(ecg)
    qrs = ph["qrs_duration"].to_numpy()
    assert np.corrcoef(measured, qrs)[0, 1] > 0.7
    narrow = qrs < 110
    assert np.corrcoef(measured[narrow], qrs[narrow])[0, 1] > 0.5  # tracks within the normal range too
    assert np.median(measured[qrs > 120]) > np.median(measured[qrs < 100]) + 25
