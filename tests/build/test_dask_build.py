"""The build's embedding on a cluster: a killed worker's partition is redone elsewhere, a rerun resumes, results are the in-process ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from lse_panel.build import synthesise_bundle
from lse_panel.cohort.bundle import open_bundle, read_manifest
from lse_panel.config import SETTINGS
from lse_panel.digest import checkpoint_digest
from lse_panel.model.embedding import STAGING, embed_bundle, embed_partition, hashlib_key

distributed = pytest.importorskip("distributed")

N = 90
MODEL = str(Path(SETTINGS.demo_model).resolve())


def die_once(flag: str, *args, **kwargs):
    """``embed_partition``, except that the first call anywhere kills its worker process mid-task."""
    if not os.path.exists(flag):
        Path(flag).touch()
        os._exit(1)  # the worker dies as if killed: no exception, no result
    return embed_partition(*args, **kwargs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    path = synthesise_bundle(tmp_path_factory.mktemp("ref") / "b", n_subjects=N, progress=False, build_status="in_progress")
    embed_bundle(path, MODEL, batch_size=32, progress=False)
    return path


def _partitioned(tmp_path: Path, partitions: int) -> tuple[Path, list[int], Path]:
    path = synthesise_bundle(tmp_path / "p", n_subjects=N, progress=False, build_status="in_progress", partitions=partitions)
    bounds = read_manifest(path)["layout"]["bounds"]
    staging = path / STAGING / f"embed-{hashlib_key(checkpoint_digest(MODEL), bounds, 'parquet')}"
    staging.mkdir(parents=True)
    return path, bounds, staging


def _assert_same_latents(path: Path, reference: Path) -> None:
    built, expected = open_bundle(path, allow_incomplete=True), open_bundle(reference, allow_incomplete=True)
    assert read_manifest(path)["latents"]["fused"]["file"] == "parts/latents__fused"
    for kind in ("ecg", "mri", "fused"):
        np.testing.assert_array_equal(built.latent(kind), expected.latent(kind))
    assert not any((path / STAGING).iterdir())  # the finished partitions' staging is cleared


def test_a_killed_worker_does_not_stop_the_build(reference, tmp_path) -> None:
    import cloudpickle

    from lse_panel.cohort.dask_backend import run_tasks

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    path, bounds, staging = _partitioned(tmp_path, 3)
    flag = str(tmp_path / "killed-once")
    calls = [((flag, str(path), MODEL, i, bounds[i], bounds[i + 1], str(staging), "parquet"), {"batch_size": 32})
             for i in range(3)]  # fmt: skip
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with distributed.Client(cluster) as client:
            figures = run_tasks(die_once, calls, client=client, progress=False)
            assert os.path.exists(flag)  # a worker did die mid-task, and its partition was still encoded
            assert sorted(f["rows"] for f in figures) == [30, 30, 30]
            result = embed_bundle(path, MODEL, client=client, progress=False)
    finally:
        cluster.close()
    assert result["partitions_done_before"] == 3
    _assert_same_latents(path, reference)


def test_a_rerun_resumes_with_the_partitions_not_done(reference, tmp_path) -> None:
    path, bounds, staging = _partitioned(tmp_path, 3)
    embed_partition(str(path), MODEL, 1, bounds[1], bounds[2], str(staging), "parquet", batch_size=32)
    result = embed_bundle(path, MODEL, batch_size=32, progress=False)  # a Parquet bundle: partition by partition
    assert result["partitions"] == 3 and result["partitions_done_before"] == 1
    _assert_same_latents(path, reference)
