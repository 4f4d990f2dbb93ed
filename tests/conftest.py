"""Fixtures shared across test folders."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs

BLOBS_N, BLOBS_D = 3000, 16
"""Under 4096 rows umap-learn finds neighbours exactly instead of with pynndescent, which skips
~30 s of numba compilation per test process."""


@pytest.fixture(scope="session")
def blobs() -> np.ndarray:
    """(3000, 16) float32 latents in 8 clusters, for the projection tests."""
    x, _ = make_blobs(n_samples=BLOBS_N, n_features=BLOBS_D, centers=8, cluster_std=2.0, random_state=0)
    return x.astype(np.float32)
