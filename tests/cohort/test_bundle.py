"""Bundle round-trip, atomic writes and every validation error the loader promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lse_panel.cohort.bundle import Cohort, open_bundle
from lse_panel.cohort.bundle_writer import update_bundle, write_bundle
from lse_panel.cohort.schema import SCHEMA_VERSION, BundleError
from lse_panel.testing import TINY_MODALITIES, TINY_PHENOTYPES, tiny_cohort


@pytest.fixture(scope="module")
def source() -> Cohort:
    return tiny_cohort(300)


def _write(path: Path, cohort: Cohort) -> Path:
    write_bundle(
        path,
        ids=cohort.ids,
        phenotypes=cohort.phenotypes,
        phenotype_specs=cohort.phenotype_specs,
        modalities=cohort.modalities,
        provenance={"test": True},
    )
    with update_bundle(path) as update:
        for kind, block in cohort.latents.items():
            update.add_latent(kind, block, model="none")
        for key, coords in cohort.projections.items():
            latent, method = key.split("/")
            update.add_projection(latent, method, coords, params={})
        for kind, per in cohort.predictions.items():
            for name, values in per.items():
                task = "regression" if cohort.phenotype_specs[name].type == "continuous" else "classification"
                update.add_prediction(kind, name, values, task=task)
    return path


@pytest.fixture
def bundle(tmp_path: Path, source: Cohort) -> Path:
    return _write(tmp_path / "bundle", source)


def test_round_trip_keeps_every_block(bundle: Path, source: Cohort) -> None:
    loaded = open_bundle(bundle)
    assert loaded.n_subjects == source.n_subjects
    np.testing.assert_array_equal(loaded.ids, source.ids)
    for name in source.phenotype_specs:
        np.testing.assert_array_equal(loaded.phenotype(name), source.phenotype(name))
        assert loaded.phenotype(name).dtype == source.phenotype(name).dtype
    assert list(loaded.phenotypes.columns) == list(source.phenotypes.columns)
    assert set(loaded.latents) == {"ecg", "mri", "fused"}
    for key, coords in source.projections.items():
        np.testing.assert_array_equal(loaded.projection(key), coords)
    np.testing.assert_array_equal(loaded.predictions["fused"]["age"], source.predictions["fused"]["age"])
    assert loaded.modalities["ecg"].kind == "signal"
    assert loaded.modalities["mri"].shape == TINY_MODALITIES["mri"].shape
    assert loaded.prediction_tasks()["af"] == "classification"


def test_columns_are_memory_mapped_read_only(bundle: Path) -> None:
    loaded = open_bundle(bundle)
    coords = loaded.projection("fused/umap")
    assert isinstance(coords, np.memmap)
    with pytest.raises(ValueError):
        coords[0, 0] = 1.0


def test_manifest_declares_kinds_shapes_and_units(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["n_subjects"] == 300
    ecg = manifest["modalities"]["ecg"]
    assert ecg["kind"] == "signal" and ecg["shape"] == [3, 64] and ecg["sampling_rate_hz"] == 50.0
    assert manifest["modalities"]["mri"]["kind"] == "image_sequence"
    assert manifest["phenotypes"]["age"]["units"] == "years"
    assert manifest["phenotypes"]["sex"]["categories"] == ["female", "male"]
    assert manifest["latents"]["fused"]["dim"] == 8


def test_string_ids_round_trip(tmp_path: Path, source: Cohort) -> None:
    ids = np.array([f"S{i:05d}" for i in range(source.n_subjects)])
    write_bundle(tmp_path / "b", ids=ids, phenotypes=source.phenotypes, phenotype_specs=source.phenotype_specs)
    assert open_bundle(tmp_path / "b").ids[3] == "S00003"


# -- every validation error names the file, the field and the fix ------------------------
def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no such bundle directory.*lse build"):
        open_bundle(tmp_path / "nope")


def test_missing_manifest_looks_like_interrupted_build(bundle: Path) -> None:
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest.json: missing.*interrupted build.*lse build"):
        open_bundle(bundle)


def test_missing_file(bundle: Path) -> None:
    (bundle / "latents" / "mri.npy").unlink()
    with pytest.raises(BundleError, match=r"latents/mri.npy: missing.*'latents.mri'"):
        open_bundle(bundle)


def test_wrong_dtype(bundle: Path) -> None:
    np.save(bundle / "phenotypes" / "age.npy", np.zeros(300, dtype=np.float64))
    with pytest.raises(BundleError, match=r"phenotypes/age.npy: has dtype float64, expected float32"):
        open_bundle(bundle)


def test_wrong_length(bundle: Path) -> None:
    np.save(bundle / "projections" / "fused__umap.npy", np.zeros((299, 2), dtype=np.float32))
    with pytest.raises(BundleError, match=r"fused__umap.npy: has shape \(299, 2\), expected \(300, 2\)"):
        open_bundle(bundle)


def test_duplicate_ids(bundle: Path) -> None:
    ids = np.load(bundle / "ids.npy")
    ids[7] = ids[3]
    np.save(bundle / "ids.npy", ids)
    with pytest.raises(BundleError, match=r"ids.npy: 1 duplicate subject id\(s\).*deduplicate"):
        open_bundle(bundle)


def test_nan_coordinates(bundle: Path) -> None:
    coords = np.load(bundle / "projections" / "ecg__pca.npy")
    coords[5, 1] = np.nan
    np.save(bundle / "projections" / "ecg__pca.npy", coords)
    with pytest.raises(BundleError, match=r"ecg__pca.npy: projection 'ecg/pca' has NaN coordinates"):
        open_bundle(bundle)


def test_unknown_schema_version(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"'schema_version' is 99.*reads version 1"):
        open_bundle(bundle)


def test_corrupt_manifest(bundle: Path) -> None:
    (bundle / "manifest.json").write_text('{"schema_version": 1, "n_sub')
    with pytest.raises(BundleError, match=r"manifest.json: not valid JSON"):
        open_bundle(bundle)


def test_truncated_column(bundle: Path) -> None:
    path = bundle / "latents" / "ecg.npy"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BundleError, match=r"latents/ecg.npy: unreadable"):
        open_bundle(bundle)


def test_category_codes_out_of_range(bundle: Path) -> None:
    np.save(bundle / "phenotypes" / "sex.npy", np.full(300, 3, dtype=np.int8))
    with pytest.raises(BundleError, match=r"sex.npy: codes outside 0..1"):
        open_bundle(bundle)


def test_write_refuses_duplicate_ids_before_touching_disk(tmp_path: Path, source: Cohort) -> None:
    ids = source.ids.copy()
    ids[1] = ids[0]
    with pytest.raises(BundleError, match="duplicate"):
        write_bundle(tmp_path / "b", ids=ids, phenotypes=source.phenotypes, phenotype_specs=source.phenotype_specs)
    assert not any(tmp_path.iterdir())


def test_write_refuses_to_clobber(bundle: Path, source: Cohort) -> None:
    with pytest.raises(BundleError, match="already exists.*--overwrite"):
        write_bundle(bundle, ids=source.ids, phenotypes=source.phenotypes, phenotype_specs=source.phenotype_specs)


# -- atomicity ------------------------------------------------------------------------------
def test_interrupted_write_leaves_no_bundle(tmp_path: Path, source: Cohort, monkeypatch) -> None:
    calls = {"n": 0}
    real_save = np.save

    def failing_save(file, arr, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated Ctrl-C mid-write")
        return real_save(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(tmp_path / "b", ids=source.ids, phenotypes=source.phenotypes, phenotype_specs=source.phenotype_specs)
    assert not (tmp_path / "b").exists()
    assert list(tmp_path.iterdir()) == []  # staging directory cleaned up too


def test_interrupted_update_keeps_previous_manifest(bundle: Path) -> None:
    before = (bundle / "manifest.json").read_text()
    with pytest.raises(RuntimeError):
        with update_bundle(bundle) as update:
            update.add_latent("extra", np.zeros((300, 4), dtype=np.float32))
            raise RuntimeError("crash after writing the block, before the manifest")
    assert (bundle / "manifest.json").read_text() == before
    assert "extra" not in open_bundle(bundle).latents


def test_update_rejects_rows_of_another_cohort(bundle: Path) -> None:
    with pytest.raises(BundleError, match="299 rows for a bundle of 300"):
        with update_bundle(bundle) as update:
            update.add_projection("fused", "tsne", np.zeros((299, 2), dtype=np.float32))


def test_no_temporary_files_left_behind(bundle: Path) -> None:
    leftovers = [p for p in bundle.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_in_memory_cohort_validates_like_disk(source: Cohort) -> None:
    with pytest.raises(BundleError, match="duplicate"):
        Cohort.from_arrays(np.zeros(3, dtype=np.int64), source.phenotypes.iloc[:3], TINY_PHENOTYPES)


def test_servable_bundle_loads_and_picks_up_projections_added_later(bundle: Path, source: Cohort) -> None:
    with update_bundle(bundle) as update:
        del update.manifest["projections"]["mri/umap"]
        update.set_build_status("servable", pending=["mri/umap"])
    cohort = open_bundle(bundle)
    assert cohort.build_status == "servable" and cohort.pending_projections == ["mri/umap"]
    assert cohort.refresh_projections() == []
    with update_bundle(bundle) as update:
        update.add_projection("mri", "umap", source.projection("mri/umap"), params={})
        update.set_build_status("complete")
    assert cohort.refresh_projections() == ["mri/umap"]
    np.testing.assert_array_equal(cohort.projection("mri/umap"), source.projection("mri/umap"))
    assert cohort.build_status == "complete" and cohort.pending_projections == []
    assert "pending" not in json.loads((bundle / "manifest.json").read_text())["build"]


def test_projection_added_later_with_nan_is_refused(bundle: Path) -> None:
    cohort = open_bundle(bundle)
    coords = np.load(bundle / "projections" / "ecg__pca.npy")
    coords[3, 0] = np.nan
    np.save(bundle / "projections" / "late.npy", coords)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["projections"]["ecg/late"] = {**manifest["projections"]["ecg/pca"], "file": "projections/late.npy"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="projection 'ecg/late' has NaN coordinates"):
        cohort.refresh_projections()
    assert "ecg/late" not in cohort.projections


def test_unknown_build_status_refused(bundle: Path) -> None:
    with pytest.raises(ValueError, match="build status must be one of"):
        with update_bundle(bundle) as update:
            update.set_build_status("done")
