"""`lse import --dask` and `--partitions` give the in-process bundle: records encoded per partition task, Parquet parts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lse_panel.cohort.bundle import open_bundle
from lse_panel.importing import import_cohort, importer, read_spec
from lse_panel.importing.spec import EncoderInput

from import_fixtures import N_RECORDS

distributed = pytest.importorskip("distributed")


def _spec(example_dir: Path):
    spec = read_spec(example_dir / "cohort.toml")
    encoders = (EncoderInput("ecg", example_dir / "models/ecg_encoder.pt", "ecg", batch_size=5),)
    latents = tuple(x for x in spec.latents if x.kind != "ecg")
    return replace(spec, latents=latents, encoders=encoders, allow_partial=True, projections=("pca",))


def test_records_encoded_on_a_cluster_equal_those_encoded_here(example_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(importer, "ENCODE_PARTITION_ROWS", 3)  # several partitions of the example's records
    here, there = tmp_path / "here", tmp_path / "there"
    import_cohort(_spec(example_dir), here, progress=False, log=lambda _: None)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    try:
        with distributed.Client(cluster) as client:
            import_cohort(_spec(example_dir), there, progress=False, log=lambda _: None, dask=client)
            assert len(client.scheduler_info()["workers"]) == 2  # a client passed in is the caller's: left open
    finally:
        cluster.close()
    near, far = open_bundle(here), open_bundle(there)
    assert far.n_subjects == near.n_subjects == N_RECORDS
    np.testing.assert_array_equal(np.asarray(far.ids), np.asarray(near.ids))
    np.testing.assert_array_equal(far.latent("ecg"), near.latent("ecg"))
    step = far.manifest["build"]["steps"]["encode:ecg"]
    assert step["partitions"] == -(-N_RECORDS // 3) and step["partitions_done_before"] == 0
    assert not list((there / ".staging").glob("encode-*"))  # the parts were assembled and let go


def test_a_rerun_encodes_only_the_partitions_not_done(example_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(importer, "ENCODE_PARTITION_ROWS", 3)
    real = importer.encode_partition
    calls: list[int] = []

    def dies_on_the_third(*args, **kwargs):
        calls.append(args[4])
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill mid-encode")
        return real(*args, **kwargs)

    monkeypatch.setattr(importer, "encode_partition", dies_on_the_third)
    out = tmp_path / "bundle"
    with pytest.raises(KeyboardInterrupt):
        import_cohort(_spec(example_dir), out, progress=False, log=lambda _: None)
    monkeypatch.setattr(importer, "encode_partition", real)
    import_cohort(_spec(example_dir), out, progress=False, log=lambda _: None)
    step = open_bundle(out).manifest["build"]["steps"]["encode:ecg"]
    assert step["partitions_done_before"] == 2


def test_partitions_lay_an_import_out_as_parquet_with_the_same_arrays(example_dir: Path, tmp_path: Path, imported: Path) -> None:
    out = tmp_path / "parts"
    import_cohort(_spec(example_dir), out, progress=False, log=lambda _: None, partitions=3)
    here = tmp_path / "npy"
    import_cohort(_spec(example_dir), here, progress=False, log=lambda _: None)
    far, near = open_bundle(out), open_bundle(here)
    assert far.manifest["layout"]["format"] == "parquet" and len(far.manifest["layout"]["bounds"]) == 4
    assert not list((out / "latents").glob("*.npy"))  # streamed, then moved into parts (the encoded one too)
    assert all(meta["file"].startswith("parts/") for meta in far.manifest["latents"].values())
    np.testing.assert_array_equal(np.asarray(far.ids), np.asarray(near.ids))
    for kind in near.latents:
        np.testing.assert_array_equal(far.latent(kind), near.latent(kind))
    for name in near.phenotype_specs:
        np.testing.assert_array_equal(far.phenotype(name), near.phenotype(name))
    for key in near.projections:
        np.testing.assert_allclose(far.projection(key), near.projection(key), rtol=1e-5, atol=1e-5)
