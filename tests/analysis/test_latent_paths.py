"""Latent directions, perturbations, interpolations and their placement on a 2-D map, checked exactly."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.decode import mean_latent
from lse_panel.analysis.sampling import sample_rows
from lse_panel.analysis.latent_paths import (
    NeighbourPlacer,
    decode_path,
    direction_from_means,
    direction_sd,
    group_direction,
    interpolate,
    pca_params,
    pca_transform,
    perturb,
    place_in_projection,
    principal_directions,
    unit_direction,
)
from lse_panel.cohort.bundle import Cohort
from lse_panel.testing import tiny_cohort, tiny_decoder

N = 400


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return tiny_cohort(N)


def test_principal_directions_are_orthonormal_and_sorted(cohort: Cohort) -> None:
    block = cohort.latent("fused")
    directions, variance = principal_directions(block, k=5)
    assert directions.shape == (5, block.shape[1])
    np.testing.assert_allclose(directions @ directions.T, np.eye(5), atol=1e-10)
    assert np.all(np.diff(variance) <= 0)
    # The variance along each direction is what it says.
    x = block.astype(np.float64) - block.mean(0)
    np.testing.assert_allclose(np.var(x @ directions.T, axis=0, ddof=1), variance, rtol=1e-6)
    # Matches numpy's SVD up to sign.
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(np.abs(np.sum(directions * vt[:5], axis=1)), 1.0, atol=1e-8)
    # Deterministic signs: the largest component is positive.
    assert np.all(directions[np.arange(5), np.abs(directions).argmax(1)] > 0)


def test_principal_directions_on_a_sample_are_reproducible(cohort: Cohort) -> None:
    block = cohort.latent("ecg")
    a, va = principal_directions(block, k=3, sample=200, seed=4)
    b, vb = principal_directions(block, k=3, sample=200, seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(va, vb)
    assert len(sample_rows(N, 200, seed=4)) == 200
    np.testing.assert_array_equal(sample_rows(N, None), np.arange(N))


def test_direction_sd_of_a_principal_direction_is_its_sd(cohort: Cohort) -> None:
    block = cohort.latent("fused")
    directions, variance = principal_directions(block, k=2)
    assert direction_sd(block, directions[0]) == pytest.approx(np.sqrt(variance[0]), rel=1e-6)
    assert direction_sd(block, unit_direction(3, block.shape[1])) == pytest.approx(
        float(block[:, 3].astype(np.float64).std(ddof=1)), rel=1e-6
    )


def test_unit_direction() -> None:
    e = unit_direction(2, 5)
    np.testing.assert_array_equal(e, [0, 0, 1, 0, 0])
    with pytest.raises(ValueError, match="out of range"):
        unit_direction(5, 5)


def test_group_direction_points_from_b_to_a(cohort: Cohort) -> None:
    block = cohort.latent("fused")
    a, b = np.arange(0, 50), np.arange(200, 300)
    direction, length = group_direction(block, a, b)
    mean_a, mean_b = mean_latent(block, a), mean_latent(block, b)
    assert np.linalg.norm(direction) == pytest.approx(1.0)
    # Moving B's mean by the length along the direction reaches A's mean: the sign is B → A.
    np.testing.assert_allclose(perturb(mean_b, direction, [length])[0], mean_a, atol=1e-10)
    assert float((mean_a - mean_b) @ direction) > 0
    reverse, reverse_length = group_direction(block, b, a)
    np.testing.assert_allclose(reverse, -direction)
    assert reverse_length == pytest.approx(length)
    same, _ = direction_from_means(mean_a, mean_b)
    np.testing.assert_allclose(same, direction)
    with pytest.raises(ValueError, match="non-empty"):
        group_direction(block, a, np.empty(0, np.int64))
    with pytest.raises(ValueError, match="coincide"):
        group_direction(block, a, a)


def test_perturb_amount_zero_decodes_to_the_original(cohort: Cohort) -> None:
    decode = tiny_decoder(8)
    z = mean_latent(cohort.latent("fused"), np.arange(30))
    directions, _ = principal_directions(cohort.latent("fused"), k=1)
    path = perturb(z, directions[0], [-2.0, 0.0, 1.5])
    assert path.shape == (3, 8)
    np.testing.assert_array_equal(path[1], z)
    np.testing.assert_allclose(path[2] - path[1], 1.5 * directions[0])
    out = decode_path(decode, path, "fused")
    original = decode(z[None].astype(np.float32), "fused")
    for name, values in original.items():
        assert out[name].shape == (3, *values.shape[1:])
        # The latent is exactly z; the decode agrees to float32 rounding (BLAS batches differ).
        np.testing.assert_allclose(out[name][1], values[0], rtol=1e-6, atol=1e-6)


def test_interpolation_endpoints_decode_to_the_two_group_means(cohort: Cohort) -> None:
    block = cohort.latent("mri")
    decode = tiny_decoder(8)
    mean_a, mean_b = mean_latent(block, np.arange(40)), mean_latent(block, np.arange(100, 190))
    path = interpolate(mean_a, mean_b, 7)
    assert path.shape == (7, 8)
    np.testing.assert_array_equal(path[0], mean_a)
    np.testing.assert_array_equal(path[-1], mean_b)
    np.testing.assert_allclose(path[3], (mean_a + mean_b) / 2, atol=1e-12)
    np.testing.assert_allclose(np.diff(path, axis=0), np.tile((mean_b - mean_a) / 6, (6, 1)), atol=1e-12)
    out = decode_path(decode, path, "mri")
    for group, mean in ((0, mean_a), (-1, mean_b)):
        expected = decode(mean[None].astype(np.float32), "mri")
        for name, values in expected.items():
            np.testing.assert_allclose(out[name][group], values[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        interpolate(mean_a, mean_b, 1)


def test_place_in_projection_returns_a_subjects_own_coords(cohort: Cohort) -> None:
    block, coords = cohort.latent("fused"), cohort.projection("fused/umap")
    rows = np.array([0, 17, 123, N - 1])
    placed = place_in_projection(block[rows], block, coords, k=1)
    np.testing.assert_allclose(placed, coords[rows], rtol=0, atol=1e-6)
    # With more neighbours the subject itself (distance 0) still takes all the weight.
    np.testing.assert_allclose(place_in_projection(block[rows], block, coords, k=10), coords[rows], atol=1e-6)


def test_place_in_projection_is_a_weighted_mean_of_neighbours(cohort: Cohort) -> None:
    block, coords = cohort.latent("fused"), cohort.projection("fused/umap")
    q = (block[:3].astype(np.float64) + block[3:6]) / 2
    placed = place_in_projection(q, block, coords, k=5)
    for i in range(3):
        dist = np.linalg.norm(block.astype(np.float64) - q[i], axis=1)
        near = np.argsort(dist)[:5]
        w = 1 / dist[near]
        np.testing.assert_allclose(placed[i], (w[:, None] * coords[near]).sum(0) / w.sum(), atol=1e-6)


def test_place_in_projection_on_a_sample_uses_only_sampled_subjects(cohort: Cohort) -> None:
    block, coords = cohort.latent("fused"), cohort.projection("fused/umap")
    placer = NeighbourPlacer.build(block, coords, sample=100, seed=1)
    assert len(placer.latents) == 100
    rows = sample_rows(N, 100, seed=1)[:5]
    np.testing.assert_allclose(placer.place(block[rows], k=1), coords[rows], atol=1e-6)


def test_exact_pca_transform_matches_the_stored_projection(cohort: Cohort) -> None:
    # tiny_cohort's PCA projection: centred on the mean, axes from an SVD of (up to) 2000 rows.
    block = cohort.latent("fused")
    mean = block.mean(0)
    centred = block - mean
    _, _, vt = np.linalg.svd(centred[:2000], full_matrices=False)
    entry = {"latent": "fused", "method": "pca", "params": {"mean": mean.tolist(), "components": vt[:2].tolist()}}
    params = pca_params(entry)
    assert params is not None
    np.testing.assert_allclose(pca_transform(block, params), cohort.projection("fused/pca"), atol=1e-4)
    # A path between two subjects is a straight line between their points on a linear map.
    path = interpolate(block[0], block[1], 5)
    xy = pca_transform(path, params)
    np.testing.assert_allclose(xy[[0, -1]], cohort.projection("fused/pca")[:2], atol=1e-4)
    np.testing.assert_allclose(np.diff(xy, 2, axis=0), 0, atol=1e-5)
    assert pca_params({"method": "umap", "params": {"n_neighbors": 15}}) is None
    assert pca_params(None) is None
