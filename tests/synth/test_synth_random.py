"""Counter-based randomness: determinism per (seed, id, stream) and sane distributions."""

from __future__ import annotations

import numpy as np
import pytest

from lse_panel.synth.random import hash_ids, noise_bank, normal, stream_key, uniform


def test_draws_depend_only_on_seed_id_stream() -> None:
    ids = np.arange(1000)
    perm = np.random.default_rng(1).permutation(ids)
    a = uniform(7, ids, "x")
    b = uniform(7, perm, "x")
    np.testing.assert_array_equal(a[perm], b)
    np.testing.assert_array_equal(normal(7, ids[:10], "y"), normal(7, ids, "y")[:10])
    assert not np.allclose(uniform(7, ids, "x"), uniform(8, ids, "x"))
    assert not np.allclose(uniform(7, ids, "x"), uniform(7, ids, "z"))


def test_distributions() -> None:
    ids = np.arange(200_000)
    u = uniform(0, ids, 3)
    assert 0.0 < u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005
    z = normal(0, ids, "n")
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.corrcoef(normal(0, ids, "a"), normal(0, ids, "b"))[0, 1]) < 0.01


def test_stream_key_is_stable_and_checked() -> None:
    assert stream_key("age") == stream_key("age") != stream_key("sex")
    with pytest.raises(ValueError):
        stream_key(-1)
    with pytest.raises(TypeError):
        hash_ids(0, np.array([0.5]), "x")


def test_noise_bank_is_cached_and_read_only() -> None:
    bank = noise_bank(0, "test", (4, 8))
    assert bank is noise_bank(0, "test", (4, 8))
    assert not bank.flags.writeable and bank.dtype == np.float32
