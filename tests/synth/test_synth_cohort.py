"""SyntheticCohort: the interface the bundle builder codes against."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lse_panel.cohort.schema import ImageSequenceModality, SignalModality, modality_from_json
from lse_panel.synth import GENERATOR_VERSION, PHENOTYPES, SyntheticCohort


def test_modalities_and_raw() -> None:
    cohort = SyntheticCohort(seed=2, mri_shape=(4, 24, 24))
    mods = cohort.modalities
    assert list(mods) == ["ecg", "mri"]
    assert isinstance(mods["ecg"], SignalModality) and isinstance(mods["mri"], ImageSequenceModality)
    for mod in mods.values():
        assert modality_from_json(json.loads(json.dumps(mod.to_json()))) == mod
    ids = np.array([4, 8, 15])
    raw = cohort.raw(ids)
    assert list(raw) == ["ecg", "mri"]
    for name, mod in mods.items():
        assert raw[name].shape == (3, *mod.shape) and raw[name].dtype == np.float32
    given = cohort.raw(ids, cohort.phenotypes(ids))
    for name in raw:
        np.testing.assert_array_equal(given[name], raw[name])
    assert list(cohort.phenotypes(ids).columns) == list(PHENOTYPES)


def test_json_round_trip() -> None:
    cohort = SyntheticCohort(seed=5, mri_shape=(8, 32, 32))
    data = json.loads(json.dumps(cohort.to_json()))
    assert data == {"source": "synthetic", "seed": 5, "mri_shape": [8, 32, 32], "version": GENERATOR_VERSION}
    assert SyntheticCohort.from_json(data) == cohort
    with pytest.raises(ValueError, match="synthetic"):
        SyntheticCohort.from_json({"source": "files", "seed": 1})


def test_import_is_light() -> None:
    # numba (for the MRI kernel) loads on first use; torch never.
    code = "import sys, lse_panel.synth; print('numba' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
