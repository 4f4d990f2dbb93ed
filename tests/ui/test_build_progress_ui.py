"""In headless Chromium: projections a background build adds show up in a served page without a reload."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lse_panel.cohort.bundle_writer import update_bundle
from lse_panel.components import build_progress
from lse_panel.components.explorer import Explorer
from lse_panel.testing import tiny_cohort, write_cohort_bundle

pytestmark = pytest.mark.ui

LATER = ("ecg/umap", "mri/umap")


@pytest.fixture
def servable_bundle(tmp_path, monkeypatch, serve_bundle) -> Iterator[tuple[str, object, object, list[Explorer]]]:
    """A bundle whose ECG and MRI UMAPs are still pending, served in-process: (url, path, cohort, sessions)."""
    cohort = tiny_cohort(5_000)
    bundle = write_cohort_bundle(cohort, tmp_path / "bundle")
    with update_bundle(bundle) as update:
        for key in LATER:
            del update.manifest["projections"][key]
        update.set_build_status("servable", pending=list(LATER))
    monkeypatch.setattr(build_progress, "CHECK_EVERY_MS", 300)
    with serve_bundle(bundle) as (url, sessions):
        yield url, bundle, cohort, sessions


def test_projections_finished_in_the_background_appear_in_the_open_page(page, servable_bundle) -> None:
    url, bundle, cohort, sessions = servable_bundle
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    notice = page.get_by_text("Still computing ecg/umap, mri/umap")
    notice.wait_for(state="visible")
    assert sessions[0].latent_view.param.method.objects == ["pca"]

    # What the background `lse build` does when the last two UMAPs are done.
    with update_bundle(bundle) as update:
        for key in LATER:
            kind, _, method = key.partition("/")
            update.add_projection(kind, method, cohort.projection(key))
        update.set_build_status("complete")

    notice.wait_for(state="hidden", timeout=15_000)
    deadline = time.monotonic() + 10
    while sessions[0].latent_view.param.method.objects != ["pca", "umap"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sessions[0].latent_view.param.method.objects == ["pca", "umap"]
    assert page.locator("select option", has_text="umap").count() >= 1
    assert not errors, errors
