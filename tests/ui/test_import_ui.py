"""An imported cohort served and driven in Chromium: its TorchScript decoders decode a selection, the subject tab shows a raw file."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import panel as pn
import pytest

from lse_panel.components.explorer import Explorer
from lse_panel.figures.app import free_port, wait_until_listening
from lse_panel.importing import import_cohort, read_spec
from lse_panel.importing.example import write_example_cohort

from conftest import stop_server

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def imported_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user") / "cohort"
    spec = write_example_cohort(folder, n_subjects=400, n_records=6, latent_dim=8)
    out = folder.parent / "bundle"
    import_cohort(replace(read_spec(spec), projections=("pca",)), out, progress=False, log=lambda _: None)
    return out


@pytest.fixture
def served(imported_bundle: Path) -> Iterator[tuple[str, list[Explorer], list[Any]]]:
    """The app as `lse serve` builds it (the bundle's own decoders), served in a thread."""
    pn.extension("tabulator")
    sessions: list[Explorer] = []
    documents: list[Any] = []

    def app() -> pn.template.BaseTemplate:
        explorer = Explorer.from_bundle(imported_bundle)
        sessions.append(explorer)
        documents.append(pn.state.curdoc)
        return explorer.servable_template()

    port = free_port()
    server = pn.serve({"explorer": app}, port=port, address="127.0.0.1", threaded=True, show=False,
                      websocket_origin=f"127.0.0.1:{port}")
    try:
        wait_until_listening(port)
        yield f"http://127.0.0.1:{port}/explorer", sessions, documents
    finally:
        stop_server(server)


def _on_server(documents: list[Any], action) -> None:
    """Run ``action`` on the session's event loop, as a click in the page would."""
    deadline = time.monotonic() + 30
    while not documents and time.monotonic() < deadline:
        time.sleep(0.1)
    documents[0].add_next_tick_callback(action)


def test_imported_cohort_decodes_a_selection_and_shows_a_raw_record(page, served) -> None:
    url, sessions, documents = served
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.get_by_text(re.compile(r"of 400 subjects selected")).first.wait_for()
    _on_server(documents, lambda: sessions[0].select(bounds=(-1e3, -1e3, 0, 1e3), on="fused/pca"))
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
    _on_server(documents, lambda: setattr(sessions[0].state, "inspected", row))
    # Reading two DICOM files and decoding took over 30 s here with the machine loaded (load ~6).
    page.get_by_text(f"Subject {cohort.ids[row]}").first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"original: 3,600 samples at 1000 Hz")).first.wait_for()
    page.get_by_text(re.compile(r"original: 16 frames every 40 ms; reconstruction: 16 frames every 40 ms")).first.wait_for()
    assert page.locator(".bk-tab").filter(has_text="Decode").count() == 1
    assert errors == []
