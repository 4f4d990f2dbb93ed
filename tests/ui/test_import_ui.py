"""An imported cohort served and driven in Chromium: its TorchScript decoders decode a selection, the subject tab shows a raw file."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import panel as pn
import pytest

from lse_panel.components.explorer import Explorer
from lse_panel.importing import import_cohort, read_spec
from lse_panel.importing.example import write_example_cohort

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def imported_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user") / "cohort"
    spec = write_example_cohort(folder, n_subjects=400, n_records=6, latent_dim=8)
    out = folder.parent / "bundle"
    import_cohort(replace(read_spec(spec), projections=("pca",)), out, progress=False, log=lambda _: None)
    return out


def test_imported_cohort_decodes_a_selection_and_shows_a_raw_record(page, imported_bundle, serve_bundle) -> None:
    pn.extension("tabulator")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with serve_bundle(imported_bundle, own_decoder=True) as (url, sessions):
        _drive(page, url, sessions)
    assert errors == []


def _drive(page, url: str, sessions: list[Explorer]) -> None:
    page.goto(url)
    page.get_by_text(re.compile(r"of 400 subjects selected")).first.wait_for()
    sessions[0].select(bounds=(-1e3, -1e3, 0, 1e3), on="fused/pca")
    deadline = time.monotonic() + 60
    while not sessions[0].decode_pane.decoded and time.monotonic() < deadline:
        time.sleep(0.2)
    page.get_by_text(re.compile(r"Selection\W+[1-9][\d,]* subjects")).first.wait_for()
    decoded = sessions[0].decode_pane.decoded
    assert set(decoded["selection"]) == {"ecg", "mri"}  # both TorchScript decoders of the fused latent ran
    assert decoded["selection"]["ecg"].shape == (12, 600)

    cohort = sessions[0].cohort
    row = int(np.flatnonzero(np.asarray(cohort.ids) == 2_000_004)[0])  # a DICOM waveform and a DICOM cine
    page.locator(".bk-tab").filter(has_text="Subject").first.click()
    sessions[0].state.inspected = row
    # Reading two DICOM files and decoding took over 30 s here with the machine loaded (load ~6).
    page.get_by_text(f"Subject {cohort.ids[row]}").first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"original: 3,600 samples at 1000 Hz")).first.wait_for()
    page.get_by_text(re.compile(r"original: 16 frames every 40 ms; reconstruction: 16 frames every 40 ms")).first.wait_for()
    assert page.locator(".bk-tab").filter(has_text="Decode").count() == 1
