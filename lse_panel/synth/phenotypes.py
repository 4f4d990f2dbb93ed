"""Phenotype table of the synthetic cohort, driven by a few hidden physiological factors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lse_panel.cohort.schema import PhenotypeSpec
from lse_panel.synth.random import normal, uniform

__all__ = ["DOWNSTREAM_TASKS", "LVH_THRESHOLD_G_M2", "PHENOTYPES", "generate_phenotypes", "hidden_factors"]

# LV mass index above which a subject is labelled LVH (UK Biobank CMR upper limits,
# roughly mean + 2 SD of Petersen et al. 2017's healthy subset, which excludes papillary muscles).
LVH_THRESHOLD_G_M2 = {"female": 55.0, "male": 72.0}

_C = "continuous"
PHENOTYPES: dict[str, PhenotypeSpec] = {
    spec.name: spec
    for spec in (
        PhenotypeSpec("age", _C, "years", "Age at the imaging visit"),
        PhenotypeSpec("sex", "categorical", "", "Sex", categories=("female", "male")),
        PhenotypeSpec("height", _C, "cm", "Standing height"),
        PhenotypeSpec("weight", _C, "kg", "Body weight"),
        PhenotypeSpec("bmi", _C, "kg/m²", "Body-mass index"),
        PhenotypeSpec("bsa", _C, "m²", "Body-surface area (Mosteller)"),
        PhenotypeSpec("sbp", _C, "mmHg", "Seated systolic blood pressure"),
        PhenotypeSpec(
            "hypertension", "binary", "", "SBP ≥ 140 mmHg or treated hypertension", categories=("no", "yes")
        ),
        PhenotypeSpec("heart_rate", _C, "bpm", "Resting heart rate (ventricular rate in AF)"),
        PhenotypeSpec(
            "pr_interval",
            _C,
            "ms",
            "PR interval. In AF there is no P wave: the column then holds the subject's latent "
            "AV-conduction time (what PR would be in sinus rhythm), so the table has no missing values.",
        ),
        PhenotypeSpec("qrs_duration", _C, "ms", "QRS duration"),
        PhenotypeSpec("qtc", _C, "ms", "Heart-rate-corrected QT (Bazett)"),
        PhenotypeSpec("lvedv", _C, "mL", "LV end-diastolic volume"),
        PhenotypeSpec("lvesv", _C, "mL", "LV end-systolic volume"),
        PhenotypeSpec("lvef", _C, "%", "LV ejection fraction"),
        PhenotypeSpec("lv_mass", _C, "g", "LV myocardial mass"),
        PhenotypeSpec("lv_mass_index", _C, "g/m²", "LV mass indexed to body-surface area"),
        PhenotypeSpec("af", "binary", "", "Atrial fibrillation", categories=("no", "yes")),
        PhenotypeSpec(
            "lvh",
            "binary",
            "",
            "LV hypertrophy: LV mass index > 55 g/m² (women) or > 72 g/m² (men)",
            categories=("no", "yes"),
        ),
    )
}


DOWNSTREAM_TASKS: dict[str, str] = {
    **{name: "regression" for name in ("age", "bmi", "lv_mass", "lvedv", "lvesv", "lvef", "heart_rate", "qrs_duration", "qtc")},
    **{name: "classification" for name in ("sex", "af", "hypertension", "lvh")},
}
"""The synthetic cohort's downstream targets (issue 3's list): what the model card and the accuracy
pane report for it. A bundle records its own targets in ``manifest["targets"]``; this is the
synthetic producer's choice, as an imported cohort's are its user's."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _latent(ids: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Every per-subject quantity, phenotypes and hidden alike, in float64."""
    ids = np.asarray(ids)

    def z(stream: str) -> np.ndarray:
        return normal(seed, ids, stream)

    def u(stream: str) -> np.ndarray:
        return uniform(seed, ids, stream)

    out: dict[str, np.ndarray] = {}
    male = (u("sex") < 0.473).astype(np.float64)
    female = 1.0 - male
    age = np.clip(58.1 + 8.0 * z("age"), 40.0, 82.0)
    da = age - 58.1
    out["sex"], out["age"] = male, age

    # Body size: height by sex (shrinking slightly with age), BMI log-normal (right-skewed as in cohorts).
    height = np.where(male > 0, 175.8, 162.4) + np.where(male > 0, 6.8, 6.2) * z("height") - 0.08 * da
    bmi = np.exp(np.log(np.where(male > 0, 27.9, 27.1)) - 0.0125 + 0.155 * z("bmi")) + 0.03 * da
    weight = bmi * (height / 100.0) ** 2
    bsa = np.sqrt(height * weight / 3600.0)  # Mosteller (1987)
    out |= {"height": height, "bmi": bmi, "weight": weight, "bsa": bsa}
    dbmi = bmi - 27.5

    # Blood pressure rises with age, BMI and male sex; hypertension is high SBP or treatment.
    sbp = 131.0 + 0.6 * da + 0.7 * dbmi + 4.0 * male + 15.0 * z("sbp")
    treated = u("bp_treated") < _sigmoid(-2.6 + 0.07 * da + 0.08 * dbmi)
    htn = ((sbp >= 140.0) | treated).astype(np.float64)
    out |= {"sbp": sbp, "hypertension": htn}

    # AF prevalence climbs steeply with age (a few % overall), more in men and hypertension.
    af = (u("af") < _sigmoid(-4.0 + 0.085 * da + 0.55 * male + 0.5 * htn + 0.04 * dbmi)).astype(np.float64)
    out["af"] = af

    # Ventricular rate: faster and more variable in AF.
    hr = 70.0 + 1.5 * female - 0.06 * da + 0.25 * dbmi + (9.2 + 4.0 * af) * z("hr") + 10.0 * af
    out["heart_rate"] = np.clip(hr, 40.0, 150.0)

    # LV mass index: sex baseline plus pressure load and age; a mild right skew gives an LVH tail.
    zm = z("lv_mass")
    skewed = zm + 0.12 * (zm**2 - 1.0)
    lvmi = (
        np.where(male > 0, 51.0, 40.8)
        + 0.16 * (sbp - 136.0)
        + 0.07 * da
        + 2.0 * htn
        + 1.5 * af
        + np.where(male > 0, 8.0, 6.0) * skewed
    )
    lvmi = np.clip(lvmi, 22.0, 160.0)
    lvh = (lvmi > np.where(male > 0, LVH_THRESHOLD_G_M2["male"], LVH_THRESHOLD_G_M2["female"])).astype(np.float64)
    out |= {"lv_mass_index": lvmi, "lv_mass": lvmi * bsa, "lvh": lvh}

    # Systolic function: a small heart-failure-like subgroup with dilated, poorly contracting LVs.
    hf = u("hfref") < _sigmoid(-4.6 + 0.05 * da + 0.7 * male + 1.0 * af + 0.8 * lvh)
    ef = np.where(male > 0, 58.3, 61.2) + 0.06 * da - 3.0 * af - 2.0 * lvh + 4.6 * z("lvef")
    ef = np.where(hf, 36.0 + 7.0 * z("lvef_hf"), ef)
    ef = np.clip(ef, 15.0, 80.0)
    lvmi_ref = np.where(male > 0, 51.0, 40.8)
    edvi = (
        np.where(male > 0, 82.0, 73.0)
        - 0.25 * da
        + 0.45 * (lvmi - lvmi_ref)
        + np.where(male > 0, 11.0, 10.0) * z("lvedv")
    )
    edvi = np.where(hf, edvi * 1.35, edvi)
    edv = np.clip(edvi, 40.0, 220.0) * bsa
    out |= {"lvef": ef, "lvedv": edv, "lvesv": edv * (1.0 - ef / 100.0), "hfref": hf.astype(np.float64)}

    # Conduction: PR log-normal (AV delay), lengthening with age; bundle-branch block widens QRS.
    out["pr_interval"] = np.clip(
        155.0 * np.exp(0.185 * z("pr")) + 0.6 * da + 4.0 * male, 90.0, 400.0
    )
    # Dilated, poorly contracting LVs often conduct late (LBBB is common in HFrEF).
    block = u("bbb") < _sigmoid(-4.4 + 0.05 * da + 0.5 * male + 0.5 * lvh + 1.8 * hf)
    qrs = (
        np.where(male > 0, 92.0, 84.5)
        + 0.12 * (lvmi - lvmi_ref)
        + 0.05 * da
        + 0.08 * (edvi - np.where(male > 0, 82.0, 73.0))
        + 7.0 * z("qrs")
    )
    qrs = np.where(block, 138.0 + 10.0 * z("qrs_block"), qrs)
    out["qrs_duration"] = np.clip(qrs, 60.0, 200.0)
    # Block kind (1 right, 2 left bundle) only shapes the raw ECG.
    # In heart failure the block is mostly left-sided.
    out["conduction_block"] = np.where(block, np.where(u("bbb_kind") < np.where(hf, 0.25, 0.6), 1.0, 2.0), 0.0)

    # Repolarisation: QTc longer in women, with wide QRS, with age and LVH.
    qtc = (
        np.where(male > 0, 405.0, 412.5)
        + 0.3 * (out["qrs_duration"] - np.where(male > 0, 92.0, 84.5))
        + 0.25 * da
        + 4.0 * lvh
        + 12.5 * z("qtc")
    )
    out["qtc"] = np.clip(qtc, 340.0, 520.0)

    # Hidden, non-phenotype factors the raw generators need.
    # Anatomical orientation of the heart in the chest (degrees, + = more vertical): horizontal in
    # obese, short and older subjects (raised diaphragm), vertical in tall thin ones. It drives both
    # the electrical QRS axis and the long-axis tilt seen in the cine.
    dh = height - np.where(male > 0, 175.8, 162.4)
    orient = 15.0 * z("heart_orient") - 1.0 * dbmi + 0.4 * dh - 0.3 * da
    out["heart_orientation_deg"] = orient
    out["qrs_axis_deg"] = 32.0 + orient - 0.2 * da - 8.0 * lvh + 10.0 * z("qrs_axis")
    out["heart_rotation_deg"] = 10.0 * z("heart_rotation")
    out["qrs_amplitude_scale"] = np.exp(0.18 * z("qrs_amp")) * (27.5 / bmi) ** 0.5 * (1.0 - 0.08 * female)
    out["t_amplitude_scale"] = np.exp(0.22 * z("t_amp"))
    out["p_amplitude_scale"] = np.exp(0.2 * z("p_amp"))
    out["ecg_noise_mv"] = 0.006 + 0.008 * u("ecg_noise")
    out["wander_amplitude_mv"] = 0.01 + 0.04 * u("wander_amp")
    out["wander_freq_hz"] = 0.15 + 0.35 * u("wander_freq")
    out["wander_phase"] = 2.0 * np.pi * u("wander_phase")
    out["af_freq_hz"] = 4.5 + 3.0 * u("af_freq")
    out["af_amplitude_mv"] = 0.03 + 0.04 * u("af_amp")
    out["af_phase"] = 2.0 * np.pi * u("af_phase")
    # The 4-chamber plane follows the heart's own long axis, so the in-plane tilt of the LV
    # tracks the anatomical orientation (plus a little slice-planning scatter).
    out["image_angle_deg"] = 0.35 * orient + 2.5 * z("image_angle")
    out["image_shift_x"] = 0.025 * z("image_shift_x")
    out["image_shift_y"] = 0.025 * z("image_shift_y")
    # Field of view is planned to the chest: a larger body gets a larger FOV, so the heart looks smaller.
    out["image_scale"] = np.exp(0.03 * z("image_scale")) * (27.5 / bmi) ** 0.25
    out["image_contrast"] = np.exp(0.1 * z("image_contrast"))
    # Thicker chest wall and fat lower the coil SNR, as it damps the ECG voltages.
    out["image_noise"] = (0.025 + 0.03 * u("image_noise")) * (bmi / 27.5) ** 1.5
    # Atria dilate with AF, hypertension and age.
    out["atrial_scale"] = np.exp(0.08 * z("atrial")) * (1.0 + 0.25 * af + 0.08 * htn + 0.004 * da)
    return out


HIDDEN_FACTORS = (
    "heart_orientation_deg",
    "qrs_axis_deg",
    "heart_rotation_deg",
    "qrs_amplitude_scale",
    "t_amplitude_scale",
    "p_amplitude_scale",
    "conduction_block",
    "ecg_noise_mv",
    "wander_amplitude_mv",
    "wander_freq_hz",
    "wander_phase",
    "af_freq_hz",
    "af_amplitude_mv",
    "af_phase",
    "image_angle_deg",
    "image_shift_x",
    "image_shift_y",
    "image_scale",
    "image_contrast",
    "image_noise",
    "atrial_scale",
)
"""Names returned by :func:`hidden_factors`."""


def generate_phenotypes(ids: np.ndarray, seed: int) -> pd.DataFrame:
    """Generate the phenotype table for the given subjects.

    Parameters
    ----------
    ids
        Non-negative integer subject ids. Each row depends only on (seed, id), never on
        the other ids in the batch.
    seed
        The cohort's seed.

    Returns
    -------
    pandas.DataFrame
        One row per id, columns in :data:`PHENOTYPES` order; continuous columns float32,
        binary and categorical columns int8 codes into the spec's ``categories``.
    """
    lat = _latent(ids, seed)
    cols: dict[str, Any] = {
        name: lat[name].astype(spec.dtype) for name, spec in PHENOTYPES.items()
    }
    return pd.DataFrame(cols, copy=False)


def hidden_factors(ids: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Per-subject factors the raw generators need that are not phenotypes.

    Parameters
    ----------
    ids
        Non-negative integer subject ids.
    seed
        The cohort's seed.

    Returns
    -------
    dict of str to numpy.ndarray
        float64 arrays keyed by :data:`HIDDEN_FACTORS`: anatomical heart orientation (degrees,
        shared by the ECG axis and the cine's long-axis tilt), ECG axis (degrees, frontal plane),
        heart rotation (horizontal plane), QRS/T/P amplitude scales, conduction block kind
        (0 none, 1 right, 2 left bundle), ECG noise and baseline-wander parameters, AF
        fibrillatory-wave parameters, image pose (angle, shift, scale), contrast, noise
        and atrial size.
    """
    lat = _latent(ids, seed)
    return {name: lat[name] for name in HIDDEN_FACTORS}
