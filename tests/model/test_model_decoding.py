"""The checkpoint decoder: shapes, batching, the decoder protocol, means, interpolation and perturbation."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.analysis.decode import decodable_kinds, mean_latent
from lse_panel.analysis.latent_paths import group_direction, interpolate, principal_directions, unit_direction
from lse_panel.model.decoding import CheckpointDecoder
from model_fixtures import TINY_ECG, TINY_MRI


@pytest.fixture
def decoder(tiny_checkpoint):
    return CheckpointDecoder.from_checkpoint(tiny_checkpoint, batch_size=3)


def test_decode_shapes_and_plain_numpy(decoder):
    z = np.random.default_rng(0).normal(size=(7, 8)).astype(np.float32)
    out = decoder.decode(z)
    assert out["ecg"].shape == (7, *TINY_ECG) and out["mri"].shape == (7, *TINY_MRI)
    assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in out.values())
    single = decoder.decode(z[2])
    assert single["ecg"].shape == TINY_ECG and single["mri"].shape == TINY_MRI
    # batched (batch_size=3) equals one latent at a time
    np.testing.assert_allclose(single["mri"], out["mri"][2], atol=1e-5)
    np.testing.assert_allclose(decoder(z, "mri")["ecg"], out["ecg"])  # the instance is the Decoder protocol
    assert decodable_kinds(decoder, ["fused", "pet", "ecg"]) == ["fused", "ecg"]
    with pytest.raises(ValueError, match="kinds ecg, mri, fused; got 'pet'"):
        decoder(z, "pet")
    with pytest.raises(ValueError, match=r"\(k, 8\)"):
        decoder.decode(np.zeros((2, 5)))


def test_decode_mean(decoder):
    block = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    idx = np.array([3, 7, 11])
    np.testing.assert_allclose(mean_latent(block, idx), block[idx].mean(axis=0), rtol=1e-6)
    out = decoder.decode_mean(block, idx)
    np.testing.assert_allclose(out["ecg"], decoder.decode(block[idx].mean(axis=0))["ecg"], atol=1e-5)
    assert decoder.decode_mean(block)["mri"].shape == TINY_MRI
    with pytest.raises(ValueError, match="empty group"):
        decoder.decode_mean(block, np.array([], dtype=int))


def test_interpolation_endpoints_equal_decoded_endpoints(decoder):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
    out = decoder.interpolate(a, b, 5)
    assert out["ecg"].shape == (5, *TINY_ECG)
    for name in ("ecg", "mri"):
        np.testing.assert_allclose(out[name][0], decoder.decode(a)[name], atol=1e-5)
        np.testing.assert_allclose(out[name][-1], decoder.decode(b)[name], atol=1e-5)
    path = interpolate(a, b, 3)
    np.testing.assert_allclose(path[1], (a + b) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        interpolate(a, b, 1)


def test_perturb_by_zero_equals_decode(decoder):
    z = np.random.default_rng(3).normal(size=8).astype(np.float32)
    out = decoder.perturb(z, unit_direction(2, 8), [0.0, 1.0, -2.0])
    for name in ("ecg", "mri"):
        np.testing.assert_allclose(out[name][0], decoder.decode(z)[name], atol=1e-5)
    moved = z.copy()
    moved[2] -= 2.0
    np.testing.assert_allclose(out["mri"][2], decoder.decode(moved)["mri"], atol=1e-5)


def test_directions_from_the_analysis_layer_drive_the_decoder(decoder):
    rng = np.random.default_rng(4)
    block = (rng.normal(size=(2000, 8)) * np.array([5, 1, 1, 1, 1, 1, 1, 0.1])).astype(np.float32)
    dirs, variance = principal_directions(block, 3, sample=1000)
    assert abs(abs(dirs[0, 0]) - 1) < 0.01 and np.sqrt(variance[0]) > 4
    g, _ = group_direction(block, np.where(block[:, 0] > 0)[0], np.where(block[:, 0] <= 0)[0])
    assert abs(np.linalg.norm(g) - 1) < 1e-6 and g[0] > 0.99
    z = block.mean(axis=0)
    out = decoder.perturb(z, dirs[0], [np.sqrt(variance[0])])
    np.testing.assert_allclose(out["ecg"][0], decoder.decode(z + np.sqrt(variance[0]) * dirs[0])["ecg"], atol=1e-5)
