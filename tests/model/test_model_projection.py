"""The scalable UMAP (landmarks + a torch network) and ``project`` over every method."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.projection import ProjectionResult, project_umap_full, projection_quality
from lse_panel.model.projection import NetworkProjector, project

N = 3000  # rows of the shared ``blobs`` fixture (tests/conftest.py)

# The landmark path on a small cohort: 1000 landmarks out of 3000, and a short training.
LANDMARK_PARAMS = {"full_fit_max": 1000, "n_landmarks": 1000, "regression_steps": 800}


@pytest.fixture(scope="module")
def umap_full(blobs: np.ndarray) -> ProjectionResult:
    return project_umap_full(blobs, seed=0, progress=False)


@pytest.fixture(scope="module")
def umap_landmarks(blobs: np.ndarray) -> ProjectionResult:
    return project(blobs, "umap", seed=0, progress=False, **LANDMARK_PARAMS)


def _check_coords(result: ProjectionResult, n: int) -> None:
    assert result.coords.shape == (n, 2) and result.coords.dtype == np.float32
    assert np.isfinite(result.coords).all() and np.ptp(result.coords, axis=0).min() > 0


def test_umap_on_a_small_cohort_is_the_full_fit_and_deterministic(
    blobs: np.ndarray, umap_full: ProjectionResult
) -> None:
    # n <= full_fit_max: method="umap" is the full fit, so a second, independent fit with the same
    # seed must reproduce the first exactly.
    result = project(blobs, "umap", seed=0, progress=False)
    assert result.method == "umap" and result.params["path"] == "full"
    np.testing.assert_array_equal(result.coords, umap_full.coords)


def test_umap_landmarks_quality(blobs: np.ndarray, umap_landmarks: ProjectionResult, umap_full: ProjectionResult) -> None:
    _check_coords(umap_landmarks, N)
    assert umap_landmarks.params["path"] == "landmarks"
    assert umap_landmarks.params["n_landmarks"] == 1000
    assert set(umap_landmarks.timings) == {"fit_landmarks", "train", "apply"}
    quality = projection_quality(blobs, umap_landmarks.coords, k=15, reference_coords=umap_full.coords)
    assert quality["trustworthiness"] >= 0.9
    assert 0 < quality["knn_agreement"] <= 1


def test_umap_landmarks_is_deterministic(blobs: np.ndarray, umap_landmarks: ProjectionResult) -> None:
    again = project(blobs, "umap", seed=0, progress=False, **LANDMARK_PARAMS)
    np.testing.assert_array_equal(again.coords, umap_landmarks.coords)


def test_network_projector_transforms_and_round_trips(
    tmp_path, blobs: np.ndarray, umap_landmarks: ProjectionResult
) -> None:
    from lse_panel.model.parametric_umap import load_projection_net

    projector = umap_landmarks.projector
    assert isinstance(projector, NetworkProjector)
    np.testing.assert_allclose(umap_landmarks.transform(blobs[:50]), umap_landmarks.coords[:50], atol=1e-4)
    projector.save(tmp_path / "net.pt")
    reloaded = NetworkProjector(load_projection_net(tmp_path / "net.pt"))
    np.testing.assert_array_equal(reloaded.transform(blobs[:50]), projector.transform(blobs[:50]))


@pytest.mark.parametrize(
    ("latents", "method", "match"),
    [
        (np.ones((5, 4, 3), dtype=np.float32), "umap", "2-D numpy array"),
        (np.ones((20, 8), dtype=np.float32), "umap", "at least 60 subjects.*pca"),
        (np.ones((10, 4), dtype=np.float32), "tsne", "unknown projection method 'tsne'"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(latents: np.ndarray, method: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        project(latents, method, progress=False)


@pytest.mark.parametrize("method", ["pca", "umap", "umap_full"])
def test_non_finite_latents_name_the_rows(blobs: np.ndarray, method: str) -> None:
    bad = blobs.copy()
    bad[1234, 3] = np.nan
    bad[2000, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite values in 2 row\(s\).*first: row 1234.*drop or impute"):
        project(bad, method, progress=False)
