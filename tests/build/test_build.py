"""`lse build` end to end on a small cohort: every step, resume after interruption, refusal of half-built bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lse_panel.build import build_cohort
from lse_panel.synth import DOWNSTREAM_TASKS
from lse_panel.cohort.bundle import open_bundle
from lse_panel.cohort.schema import BundleError
from lse_panel.config import SETTINGS

N = 1_500
MODEL = SETTINGS.demo_model
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    out = tmp_path_factory.mktemp("build") / "cohort"
    timings = build_cohort(out, n_subjects=N, seed=3, model=MODEL, progress=False)
    return out, timings


def test_pipeline_produces_a_complete_bundle(built) -> None:
    out, timings = built
    cohort = open_bundle(out)
    assert cohort.n_subjects == N
    assert set(cohort.latents) == {"ecg", "mri", "fused"}
    assert {f"{k}/{m}" for k in ("ecg", "mri", "fused") for m in ("pca", "umap")} <= set(cohort.projections)
    for kind in ("ecg", "mri", "fused"):
        assert set(cohort.predictions[kind]) == set(DOWNSTREAM_TASKS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["build"]["status"] == "complete"
    assert manifest["raw"]["source"] == "synthetic"
    assert {"synth", "embed", "crossfit", "project:fused/umap"} <= set(manifest["build"]["steps"])
    assert all(step > 0 for step in timings.values())
    # The primary latent's UMAP was computed beside the cross-fit (both single-threaded).
    assert manifest["build"]["steps"]["project:fused/umap"]["overlapped_with"] == "crossfit"


def test_rerun_on_finished_bundle_skips_every_step(built) -> None:
    out, _ = built
    timings = build_cohort(out, n_subjects=N, seed=3, model=MODEL, progress=False)
    assert all(seconds == 0.0 for seconds in timings.values())


def test_other_settings_on_existing_bundle_refused(built) -> None:
    out, _ = built
    with pytest.raises(BundleError, match="built with other settings"):
        build_cohort(out, n_subjects=N + 1, seed=3, model=MODEL, progress=False)


@pytest.mark.parametrize("fail_at", ["lse_panel.model.embedding.embed_bundle",
                                     "lse_panel.analysis.crossfit.cross_fit_predictions",
                                     "lse_panel.model.projection.project"])
def test_interrupted_build_is_refused_then_resumes(tmp_path: Path, built, fail_at: str, monkeypatch) -> None:
    out = tmp_path / "cohort"
    module_name, attr = fail_at.rsplit(".", 1)
    module = __import__(module_name, fromlist=[attr])
    real = getattr(module, attr)
    calls = {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if attr == "project" and calls["n"] < 3:  # let a couple of projections finish first
            return real(*args, **kwargs)
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(module, attr, crash)
    with pytest.raises(KeyboardInterrupt):
        build_cohort(out, n_subjects=N, seed=3, model=MODEL, progress=False)
    with pytest.raises(BundleError, match="half-built bundle.*lse build"):
        open_bundle(out)
    monkeypatch.setattr(module, attr, real)
    timings = build_cohort(out, n_subjects=N, seed=3, model=MODEL, progress=False)
    assert timings["synth"] == 0.0  # reused, not redone
    resumed = open_bundle(out)
    reference = open_bundle(built[0])
    np.testing.assert_array_equal(resumed.latent("fused"), reference.latent("fused"))
    np.testing.assert_array_equal(resumed.projection("fused/umap"), reference.projection("fused/umap"))


def test_missing_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.pt.*lse train"):
        build_cohort(tmp_path / "c", n_subjects=100, model=tmp_path / "nomodel", progress=False)


def test_corrupted_column_in_built_bundle_is_refused(built, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built[0], copy)
    (copy / "latents" / "fused.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(BundleError, match="fused.npy: unreadable"):
        open_bundle(copy)


def test_a_map_that_fails_beside_the_cross_fit_runs_again_after_it(tmp_path: Path, built, monkeypatch) -> None:
    import threading

    from lse_panel import steps

    real = steps._compute_projection
    failed = []

    def fail_in_background(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            failed.append(args[1])
            raise MemoryError("simulated: no room for the map beside the cross-fit")
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "_compute_projection", fail_in_background)
    out = tmp_path / "cohort"
    timings = build_cohort(out, n_subjects=N, seed=3, model=MODEL, until="servable", progress=False)
    assert failed == ["fused/umap"] and timings["project:fused/umap"] > 0
    step = json.loads((out / "manifest.json").read_text())["build"]["steps"]["project:fused/umap"]
    assert "overlapped_with" not in step  # computed again, in the main thread
    np.testing.assert_array_equal(open_bundle(out).projection("fused/umap"), open_bundle(built[0]).projection("fused/umap"))


def test_servable_first_then_finished_while_the_app_runs(tmp_path: Path, built, monkeypatch) -> None:
    from lse_panel.model import projection
    from lse_panel.cohort.bundle import read_manifest
    from lse_panel.components.explorer import Explorer

    out = tmp_path / "cohort"
    build_cohort(out, n_subjects=N, seed=3, model=MODEL, until="servable", progress=False)
    cohort = open_bundle(out)  # servable bundles load
    assert cohort.build_status == "servable"
    assert set(cohort.projections) == {"fused/pca", "ecg/pca", "mri/pca", "fused/umap"}
    assert cohort.pending_projections == ["ecg/umap", "mri/umap"]

    explorer = Explorer.from_bundle(out)
    assert explorer.latent_view.param.method.objects == ["pca"]
    assert explorer.build_progress._notice.visible
    assert "ecg/umap" in explorer.build_progress._text.object

    # The finishing build never hides the bundle: it stays servable until it is complete.
    real = projection.project
    seen = []

    def watched(*args, **kwargs):
        seen.append(read_manifest(out)["build"]["status"])
        return real(*args, **kwargs)

    monkeypatch.setattr(projection, "project", watched)
    timings = build_cohort(out, n_subjects=N, seed=3, model=MODEL, progress=False)
    assert seen == ["servable", "servable"]
    assert timings["embed"] == 0.0 and timings["project:fused/umap"] == 0.0 and timings["project:mri/umap"] > 0

    assert sorted(explorer.build_progress.check()) == ["ecg/umap", "mri/umap"]
    assert explorer.cohort.build_status == "complete" and explorer.cohort.pending_projections == []
    assert not explorer.build_progress._notice.visible
    assert explorer.latent_view.param.method.objects == ["pca", "umap"]
    explorer.latent_view.method = "umap"
    assert explorer.latent_view.views["ecg"].key == "ecg/umap"
    np.testing.assert_array_equal(explorer.cohort.projection("mri/umap"), open_bundle(built[0]).projection("mri/umap"))
    assert explorer.build_progress.check() == []


def test_a_map_of_older_latents_is_withdrawn_until_recomputed(built, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["build"]["settings"]["n_subjects"] == N  # what `lse serve` finishes a bundle with
    manifest["build"]["steps"]["project:ecg/umap"]["key"] = "made-from-other-latents"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    build_cohort(copy, n_subjects=N, seed=3, model=MODEL, until="servable", progress=False)
    cohort = open_bundle(copy)
    assert cohort.pending_projections == ["ecg/umap"]
    assert "ecg/umap" not in cohort.projections and "mri/umap" in cohort.projections


def test_a_second_builder_on_the_same_bundle_is_refused(built) -> None:
    from lse_panel.steps import build_lock

    out = built[0]
    with build_lock(out):
        with pytest.raises(BundleError, match=r"another `lse build` \(pid \d+\) is building this bundle"):
            build_cohort(out, n_subjects=N, seed=3, model=MODEL, progress=False)
    assert build_cohort(out, n_subjects=N, seed=3, model=MODEL, progress=False)["embed"] == 0.0


def test_decoder_only_for_the_checkpoint_that_encoded_the_latents(built, tmp_path: Path, caplog) -> None:
    from lse_panel.components.serving import load_decoder

    assert load_decoder(open_bundle(built[0])) is not None
    copy = tmp_path / "copy"
    shutil.copytree(built[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for meta in manifest["latents"].values():
        meta["model_sha256"] = "0123456789abcdef"  # as if models/demo had been retrained since
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING"):
        assert load_decoder(open_bundle(copy)) is None
    assert "has changed since" in caplog.text and "lse build --out" in caplog.text
