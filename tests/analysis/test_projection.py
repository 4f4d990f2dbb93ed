"""Torch-free projections to 2-D (PCA, umap-learn): determinism under a seed, shapes, a quality floor, the quality metrics, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.manifold import trustworthiness

from lse_panel.analysis.projection import ProjectionResult, project_pca, project_umap_full, projection_quality

N = 3000  # rows of the shared ``blobs`` fixture (tests/conftest.py)

METHODS = {"pca": project_pca, "umap_full": project_umap_full}


@pytest.fixture(scope="module")
def umap_full(blobs: np.ndarray) -> ProjectionResult:
    return project_umap_full(blobs, seed=0, progress=False)


def _check_coords(result: ProjectionResult, n: int) -> None:
    assert result.coords.shape == (n, 2)
    assert result.coords.dtype == np.float32
    assert np.isfinite(result.coords).all()
    assert np.ptp(result.coords, axis=0).min() > 0  # not collapsed onto a line or a point
    json.dumps(result.manifest_entry())  # the manifest must be able to hold it


def test_pca_is_deterministic_and_matches_its_projector(blobs: np.ndarray) -> None:
    a = project_pca(blobs, seed=0, progress=False)
    b = project_pca(blobs, seed=0, progress=False)
    _check_coords(a, N)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_allclose(a.transform(blobs[:10]), a.coords[:10], rtol=1e-5, atol=1e-5)
    assert a.method == "pca" and a.params["n_subjects"] == N and a.params["fit_sample"] == N


def test_pca_fitted_on_a_sample_is_deterministic_and_close_to_the_full_fit(blobs: np.ndarray) -> None:
    full = project_pca(blobs, progress=False)
    a = project_pca(blobs, seed=1, progress=False, fit_sample=1500, chunk_size=700)
    b = project_pca(blobs, seed=1, progress=False, fit_sample=1500, chunk_size=700)
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.params["fit_sample"] == 1500
    # Same axes up to sampling noise: the signs are fixed by sklearn's svd_flip.
    assert np.corrcoef(a.coords[:, 0], full.coords[:, 0])[0, 1] > 0.99


def test_umap_full_quality(blobs: np.ndarray, umap_full: ProjectionResult) -> None:
    _check_coords(umap_full, N)
    assert umap_full.method == "umap_full"
    quality = projection_quality(blobs, umap_full.coords, k=15)
    assert quality["trustworthiness"] >= 0.9


def test_quality_matches_sklearn_and_bounds(blobs: np.ndarray) -> None:
    coords = project_pca(blobs, progress=False).coords
    sub, sub_coords = blobs[:800], coords[:800]
    quality = projection_quality(sub, sub_coords, k=10, sample=5000)
    assert quality["sample"] == 800 and quality["k"] == 10
    assert quality["trustworthiness"] == pytest.approx(trustworthiness(sub, sub_coords, n_neighbors=10), abs=1e-12)
    # A map that is the latents themselves keeps every neighbourhood; a map agrees with itself.
    identical = projection_quality(sub[:, :2], sub[:, :2], k=10, reference_coords=sub[:, :2])
    assert identical["knn_preservation"] == pytest.approx(1.0)
    assert identical["knn_agreement"] == pytest.approx(1.0)
    # A random map fails the 0.9 floor the projections above pass.
    noise = np.random.default_rng(0).normal(size=(800, 2)).astype(np.float32)
    broken = projection_quality(sub, noise, k=15)
    assert broken["trustworthiness"] < 0.7 and broken["knn_preservation"] < 0.1


def test_quality_samples_deterministically(blobs: np.ndarray) -> None:
    coords = project_pca(blobs, progress=False).coords
    a = projection_quality(blobs, coords, sample=500, seed=3)
    assert a == projection_quality(blobs, coords, sample=500, seed=3)
    assert a["sample"] == 500


@pytest.mark.parametrize(
    ("latents", "method", "match"),
    [
        (np.ones(100, dtype=np.float32), "pca", "2-D numpy array"),
        (np.ones((5, 4, 3), dtype=np.float32), "umap_full", "2-D numpy array"),
        (np.ones((100, 1), dtype=np.float32), "pca", "at least 2"),
        (np.ones((2, 8), dtype=np.float32), "pca", "at least 3 subjects"),
        (np.ones((20, 8), dtype=np.float32), "umap_full", "at least 60 subjects.*pca"),
        (np.ones((20, 8), dtype=np.float32), "umap_full", "at least 60 subjects"),
        (np.full((10, 4), "a"), "pca", "real numbers"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(latents: np.ndarray, method: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        METHODS[method](latents, progress=False)


@pytest.mark.parametrize("method", ["pca", "umap_full"])
def test_non_finite_latents_name_the_rows(blobs: np.ndarray, method: str) -> None:
    bad = blobs.copy()
    bad[1234, 3] = np.nan
    bad[2000, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite values in 2 row\(s\).*first: row 1234.*drop or impute"):
        METHODS[method](bad, progress=False)


def test_unknown_option_is_refused(blobs: np.ndarray) -> None:
    with pytest.raises(TypeError, match="n_landmarks"):
        project_pca(blobs, progress=False, n_landmarks=10)


def test_quality_refuses_mismatched_rows(blobs: np.ndarray) -> None:
    with pytest.raises(ValueError, match="one row per subject"):
        projection_quality(blobs, np.zeros((10, 2), dtype=np.float32))


def test_transform_without_projector_says_what_to_do() -> None:
    result = ProjectionResult(np.zeros((3, 2), dtype=np.float32), "umap_full", {}, 0.0)
    with pytest.raises(ValueError, match="kept no fitted model"):
        result.transform(np.zeros((1, 4), dtype=np.float32))


def test_importing_projection_loads_no_torch_umap_or_panel() -> None:
    code = "import sys, lse_panel.analysis.projection; print(' '.join(sys.modules))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert not loaded & {"torch", "umap", "numba", "panel", "holoviews"}


def test_quality_over_all_rows_matches_sklearn_and_the_sample_scope(blobs: np.ndarray) -> None:
    coords = project_pca(blobs, progress=False).coords
    sub, sub_coords = blobs[:600], coords[:600]
    ref = np.random.default_rng(1).permutation(sub_coords)
    everyone = projection_quality(sub, sub_coords, k=10, scope="all", reference_coords=ref)
    within = projection_quality(sub, sub_coords, k=10, scope="sample", reference_coords=ref)
    assert everyone["trustworthiness"] == pytest.approx(trustworthiness(sub, sub_coords, n_neighbors=10), abs=1e-4)
    assert everyone["knn_preservation"] == pytest.approx(within["knn_preservation"], abs=1e-3)
    assert everyone["knn_agreement"] == pytest.approx(within["knn_agreement"], abs=1e-3)
    # On a sample, the estimate stays close to the exact value over everyone.
    sampled = projection_quality(sub, sub_coords, k=10, scope="all", sample=200)
    assert sampled["sample"] == 200
    assert sampled["trustworthiness"] == pytest.approx(everyone["trustworthiness"], abs=0.03)
