"""Fixtures and settings shared across test folders: hypothesis profiles, tiny latents."""

from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from sklearn.datasets import make_blobs

# `make test` (and CI) run the "default" profile: derandomized, so the same examples run every time
# and the suite cannot flake. (Hypothesis also draws literals found in the loaded project modules, so
# a run of a subset of tests may see other examples than the whole suite: a failure there is a real
# counterexample all the same; `make test` itself always collects and runs the same modules.)
# Property tests size their example counts as fractions of the profile's max_examples (100 here), so
# the whole property suite stays under a minute; `HYPOTHESIS_PROFILE=explore` draws fresh random
# examples, ten times as many, to hunt for new bugs on demand.
_COMMON = dict(
    deadline=timedelta(seconds=10),  # generous: the 2-core machine is shared; a hang still fails
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.register_profile("default", derandomize=True, database=None, max_examples=100, **_COMMON)
settings.register_profile("explore", derandomize=False, max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

BLOBS_N, BLOBS_D = 3000, 16
"""Under 4096 rows umap-learn finds neighbours exactly instead of with pynndescent, which skips
~30 s of numba compilation per test process."""


@pytest.fixture(scope="session")
def blobs() -> np.ndarray:
    """(3000, 16) float32 latents in 8 clusters, for the projection tests."""
    x, _ = make_blobs(n_samples=BLOBS_N, n_features=BLOBS_D, centers=8, cluster_std=2.0, random_state=0)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def client():
    """A Dask client on a LocalCluster of threads in this process: starts in well under a second on 2 loaded cores."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    with distributed.Client(cluster) as dask_client:
        yield dask_client
    cluster.close()
