"""`lse import` end to end on a user-style cohort: every embedding and raw format, decoders, encoders, resume, atomicity."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

from lse_panel.cohort.bundle import open_bundle, read_manifest
from lse_panel.cohort.records import ImageSequenceRecord, SignalRecord
from lse_panel.cohort.schema import BundleError
from lse_panel.importing import import_cohort, read_spec
from lse_panel.importing.spec import EncoderInput, LatentInput
from lse_panel.model.torchscript import ScriptedDecoder
from lse_panel.sources import open_raw_source

from import_fixtures import N_RECORDS, N_SUBJECTS


def _quiet(spec, out, **kwargs):
    return import_cohort(spec, out, progress=False, log=lambda _: None, **kwargs)


def _by_id(ids: np.ndarray, table: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return table.set_index("eid").loc[ids, columns].to_numpy(np.float32)


def test_every_table_format_lands_by_subject_id(imported: Path, example_dir: Path) -> None:
    cohort = open_bundle(imported)
    assert cohort.n_subjects == N_SUBJECTS and cohort.build_status == "complete"
    assert {kind: block.shape for kind, block in cohort.latents.items()} == {k: (N_SUBJECTS, 8) for k in ("ecg", "mri", "fused")}
    ids = np.asarray(cohort.ids)
    ecg = pd.read_parquet(example_dir / "embeddings/ecg.parquet")
    mri = pd.read_csv(example_dir / "embeddings/mri.csv")  # rows shuffled in the file
    np.testing.assert_array_equal(cohort.latent("ecg"), _by_id(ids, ecg, [f"z_{i:02d}" for i in range(8)]))
    np.testing.assert_allclose(cohort.latent("mri"), _by_id(ids, mri, [f"m_{i:02d}" for i in range(8)]), rtol=1e-6)
    fused = np.load(example_dir / "embeddings/fused.npy")
    fused_ids = np.loadtxt(example_dir / "embeddings/fused_ids.txt", dtype=np.int64)
    np.testing.assert_array_equal(cohort.latent("fused"), fused[pd.Index(fused_ids).get_indexer(ids)])


def test_phenotypes_typed_and_targets_chosen(imported: Path, example_dir: Path) -> None:
    cohort = open_bundle(imported)
    specs = cohort.phenotype_specs
    assert specs["sex"].type == "binary" and specs["sex"].categories == ("female", "male")
    assert specs["af"].categories == ("no", "yes") and specs["af"].description == "Atrial fibrillation"
    assert specs["site"].type == "categorical" and specs["age"].units == "years"
    assert "note" not in specs  # excluded in the spec
    table = pd.read_csv(example_dir / "phenotypes.csv").set_index("eid").loc[np.asarray(cohort.ids)]
    sex = np.where(table["sex"] == "male", 1, 0)
    np.testing.assert_array_equal(cohort.phenotype("sex"), sex)
    np.testing.assert_allclose(cohort.phenotype("lvef"), table["lvef"].to_numpy(np.float32), equal_nan=True)
    assert cohort.targets["age"] == "regression" and cohort.targets["af"] == "classification"
    assert "site" not in cohort.targets  # three categories: not something the probes predict
    for kind in ("ecg", "mri", "fused"):
        assert set(cohort.predictions[kind]) == set(cohort.targets)
        assert set(cohort.projections) >= {f"{kind}/pca"}
    # The fused latent carries the phenotypes (it is a PCA of the raw records): the probes see it.
    pred = cohort.predictions["fused"]["lv_mass"]
    assert np.corrcoef(pred, cohort.phenotype("lv_mass"))[0, 1] > 0.5


def test_raw_records_read_in_each_format_with_their_own_timing(imported: Path) -> None:
    cohort = open_bundle(imported)
    source = open_raw_source(cohort)
    rows = pd.Index(np.asarray(cohort.ids)).get_indexer(2_000_000 + np.arange(N_RECORDS))
    seen = set()
    for row in rows:
        ecg, mri = source.record("ecg", int(row)), source.record("mri", int(row))
        assert isinstance(ecg, SignalRecord) and isinstance(mri, ImageSequenceRecord)
        assert ecg.values.shape[0] == 12 and ecg.sampling_rate_hz in (500.0, 1000.0)
        assert ecg.values.shape[1] == 3 * 600 * ecg.sampling_rate_hz / 500  # three beats, longer than a decoded one
        assert mri.values.shape == (16, 32, 32) and mri.frame_interval_ms == 40.0
        seen |= {Path(ecg.path).suffix, Path(mri.path).suffix or "series"}
    assert seen >= {".dcm", "", ".gz", "series"}  # WFDB, DICOM waveform, NIfTI, DICOM cine and series
    others = np.setdiff1d(np.arange(N_SUBJECTS), rows)
    assert source.record("ecg", int(others[0])) is None  # subjects without files have no record


def test_decoders_reconstruct_the_raw_records(imported: Path) -> None:
    cohort = open_bundle(imported)
    decoder = ScriptedDecoder.from_manifest(cohort.path, cohort.manifest["decoders"])
    assert set(decoder.kinds) == {"fused", "ecg", "mri"}
    rows = pd.Index(np.asarray(cohort.ids)).get_indexer(2_000_000 + np.arange(4))
    raw = open_raw_source(cohort).raw(cohort.ids[rows])
    fused = decoder(np.asarray(cohort.latent("fused")[rows]), "fused")
    assert fused["ecg"].shape == (4, 12, 600) and fused["mri"].shape == (4, 16, 32, 32)
    assert decoder(np.asarray(cohort.latent("ecg")[rows]), "ecg").keys() == {"ecg"}
    for name in ("ecg", "mri"):  # a linear autoencoder of 8 components: far better than the record's variance
        assert np.mean((fused[name] - raw[name]) ** 2) < 0.2 * np.var(raw[name])


def test_rerun_skips_ingest_and_a_changed_input_needs_overwrite(imported: Path, example_dir: Path, tmp_path: Path) -> None:
    timings = _quiet(replace(read_spec(example_dir / "cohort.toml"), projections=("pca",)), imported)
    assert timings["ingest"] == 0.0 and all(v == 0.0 for v in timings.values())
    copy = tmp_path / "cohort"
    shutil.copytree(example_dir, copy)
    spec = replace(read_spec(copy / "cohort.toml"), projections=("pca",))
    out = tmp_path / "bundle"
    _quiet(spec, out)
    os.utime(copy / "phenotypes.csv", ns=(1, 1))  # as if the table had been edited
    with pytest.raises(BundleError, match="not imported from these inputs.*--overwrite"):
        _quiet(spec, out)
    assert _quiet(spec, out, overwrite=True)["ingest"] > 0


def test_anndata_embeddings_with_text_ids(example_dir: Path, tmp_path: Path, imported: Path) -> None:
    spec = read_spec(example_dir / "cohort.toml")
    h5ad = example_dir / "embeddings/all.h5ad"
    latents = tuple(LatentInput(kind, h5ad, "h5ad", obsm=f"X_{kind}") for kind in ("ecg", "mri", "fused"))
    out = tmp_path / "bundle"
    _quiet(replace(spec, latents=latents, decoders=(), projections=("pca",)), out)
    cohort, reference = open_bundle(out), open_bundle(imported)
    assert cohort.ids.dtype == np.int64  # obs_names are text; they matched the integer eids
    for kind in ("ecg", "mri", "fused"):
        np.testing.assert_allclose(cohort.latent(kind), reference.latent(kind), rtol=1e-6)


def test_encoder_computes_embeddings_from_raw_records(example_dir: Path, tmp_path: Path, imported: Path) -> None:
    spec = read_spec(example_dir / "cohort.toml")
    encoders = (EncoderInput("ecg", example_dir / "models/ecg_encoder.pt", "ecg", batch_size=5),)
    latents = tuple(x for x in spec.latents if x.kind != "ecg")
    out = tmp_path / "bundle"
    # Only the subjects with raw ECGs can be encoded: the others are dropped, and the import says so.
    lines: list[str] = []
    import_cohort(replace(spec, latents=latents, encoders=encoders, allow_partial=True, projections=("pca",)), out,
                  progress=False, log=lines.append)
    assert any(f"kept the {N_RECORDS} subjects every input has" in line for line in lines)
    cohort, reference = open_bundle(out), open_bundle(imported)
    assert cohort.n_subjects == N_RECORDS and cohort.manifest["build"]["steps"]["encode:ecg"]["read_s"] >= 0
    rows = pd.Index(np.asarray(reference.ids)).get_indexer(np.asarray(cohort.ids))
    # WFDB stores µV integers and DICOM strips were resampled to 1000 Hz and back: close, not equal.
    np.testing.assert_allclose(cohort.latent("ecg"), reference.latent("ecg")[rows], atol=0.05 * np.abs(reference.latent("ecg")).max())


def test_interrupted_import_is_refused_then_resumes(example_spec, tmp_path: Path, monkeypatch) -> None:
    from lse_panel.analysis import crossfit

    out = tmp_path / "bundle"
    real = crossfit.cross_fit_predictions

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt("simulated Ctrl-C")

    monkeypatch.setattr(crossfit, "cross_fit_predictions", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _quiet(example_spec, out)
    with pytest.raises(BundleError, match="half-built"):
        open_bundle(out)
    monkeypatch.setattr(crossfit, "cross_fit_predictions", real)
    timings = _quiet(example_spec, out)
    assert timings["ingest"] == 0.0 and timings["crossfit"] > 0
    assert open_bundle(out).build_status == "complete"


def test_failed_import_leaves_no_half_bundle(example_spec, tmp_path: Path, monkeypatch) -> None:
    from lse_panel.analysis import crossfit

    def fail(*args, **kwargs):
        raise ValueError("simulated failure inside a step")

    monkeypatch.setattr(crossfit, "cross_fit_predictions", fail)
    with pytest.raises(ValueError, match="simulated failure"):
        _quiet(example_spec, tmp_path / "bundle")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == []


def test_umaps_and_servable_status(example_spec, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    _quiet(replace(example_spec, projections=("pca", "umap")), out, until="servable")
    cohort = open_bundle(out)
    assert cohort.build_status == "servable" and "fused/umap" in cohort.projections
    assert cohort.pending_projections == ["ecg/umap", "mri/umap"]
    from lse_panel.serve import finish_build_command

    assert finish_build_command(out)[-4:] == ["import", "--finish", "--out", str(out)]  # what `lse serve` runs
    from lse_panel.importing import finish_import

    finish_import(out, progress=False)
    assert open_bundle(out).build_status == "complete"


def test_cli_flags_for_the_simple_case_and_export_round_trip(example_dir: Path, tmp_path: Path) -> None:
    from lse_panel.cli import main

    out = tmp_path / "bundle"
    code = main(["import", "--latent", f"ecg={example_dir / 'embeddings/ecg.parquet'}",
                 "--latent", f"fused={example_dir / 'embeddings/all.h5ad'}",
                 "--phenotypes", str(example_dir / "phenotypes.csv"), "--id-column", "eid", "--out", str(out),
                 "--until", "servable"])
    assert code == 2  # an .h5ad needs its obsm key: flags cannot say it, the error says to use a spec
    code = main(["import", "--latent", f"ecg={example_dir / 'embeddings/ecg.parquet'}",
                 "--phenotypes", str(example_dir / "phenotypes.csv"), "--id-column", "eid", "--out", str(out)])
    assert code == 0
    cohort = open_bundle(out)
    assert list(cohort.latents) == ["ecg"] and "note" not in cohort.phenotype_specs  # free text left out

    from lse_panel.cohort.subgroups import SubgroupStore

    SubgroupStore(cohort).save("older half", np.flatnonzero(cohort.phenotype("age") > np.median(cohort.phenotype("age"))))
    h5ad = tmp_path / "cohort.h5ad"
    assert main(["export", str(out), "--anndata", str(h5ad)]) == 0
    adata = anndata.read_h5ad(h5ad)
    assert list(adata.obs_names[:3]) == [str(i) for i in cohort.ids[:3]]
    np.testing.assert_array_equal(adata.obsm["X_ecg"], cohort.latent("ecg"))
    np.testing.assert_array_equal(adata.obsm["X_ecg_umap"], cohort.projection("ecg/umap"))
    assert adata.obs["subgroup:older half"].sum() == (cohort.phenotype("age") > np.median(cohort.phenotype("age"))).sum()
    assert list(adata.obs["sex"].cat.categories) == ["female", "male"]
    assert adata.uns["lse_panel"]["targets"]["age"] == "regression"
    # ... and back: the exported file is a valid input to `lse import`.
    spec = tmp_path / "again.toml"
    spec.write_text(f'[latents.ecg]\nfile = "{h5ad}"\nobsm = "X_ecg"\n[build]\nprojections = ["pca"]\n')
    assert main(["import", "--spec", str(spec), "--out", str(tmp_path / "again")]) == 0
    np.testing.assert_array_equal(open_bundle(tmp_path / "again").latent("ecg"), cohort.latent("ecg"))
    assert read_manifest(tmp_path / "again")["phenotypes"] == {}
